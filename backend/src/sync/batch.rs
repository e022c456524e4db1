//! Applying many outbox records in one west request (gateway dialect). Same rules as
//! [`Engine::apply`] — re-read east, per-record success or backoff, transient failures pause
//! the gpeer — but one HTTP round trip, one catalog write batch and one west `syncfs` for up
//! to [`MAX_BATCH`] records.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use gpair_proto::now_ms;

use super::{join_rel, lock, AttrOp, AttrOutcome, Engine, EntryRecord, Op, OutboxRecord};
use crate::catalog::{gpair_key, CF_ENTRIES, CF_OUTBOX};
use crate::entry::{EntryKind, EntryMeta};
use crate::west::batch::{BatchClient, BatchOp};
use crate::west::keys::west_key;
use crate::west::WestError;

/// Most records applied in one request.
pub const MAX_BATCH: usize = 512;

/// What one record turned into. (At most MAX_BATCH of these live at once; boxing the big
/// variant would only add allocations.)
#[allow(clippy::large_enum_variant)]
enum Plan {
    /// Nothing to do on west (never synced and already gone).
    Nothing,
    /// East could not be read (not "gone": EIO, ESTALE, permissions…): retried later, never
    /// taken for a deletion.
    Unreadable(String),
    /// SetAttrObj of a file.
    Attr { op: BatchOp, attr: AttrOp },
    /// An rtl whose path holds a stub now: stale, applied as a no-op.
    StaleRtl,
    Write {
        op: BatchOp,
        east: Option<EntryMeta>,
        is_dir: bool,
    },
}

impl Engine {
    pub(super) async fn apply_many(
        self: &Arc<Self>,
        gpair: &str,
        gpeer: &str,
        client: Arc<BatchClient>,
        keys: Vec<Vec<u8>>,
    ) {
        let Some((rec, stats)) = self.gpair(gpair) else {
            let mut q = lock(&self.queue);
            for k in &keys {
                q.finish(k);
            }
            return;
        };
        // Renames go one by one (they move subtrees); the rest are batched.
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            match self.catalog.get::<OutboxRecord>(CF_OUTBOX, &key) {
                Ok(Some(r)) if matches!(r.op, Op::Rename { .. }) => self.apply(key).await,
                // A file being migrated, or an offloaded file whose deletion keeps its west
                // data, goes one by one (apply defers or retires it).
                Ok(Some(_)) if self.migrating(gpair, &key[gpair.len() + 1..]) => {
                    self.apply(key).await
                }
                Ok(Some(_)) if self.retains(&rec, &key[gpair.len() + 1..]) => self.apply(key).await,
                Ok(Some(r)) => records.push((key, r)),
                _ => {
                    lock(&self.queue).finish(&key);
                }
            }
        }
        if records.is_empty() {
            return;
        }
        // Read east for every record at once.
        let root = rec.local_path.clone();
        let prefix_len = gpair.len() + 1;
        // A SetAttr record's key carries a suffix after the file's path.
        let paths: Vec<Vec<u8>> = records
            .iter()
            .map(|(k, _)| super::outbox_path(&k[prefix_len..]).0.to_vec())
            .collect();
        let stub_attr = self.stub_attr().to_owned();
        let catalog = Arc::clone(&self.catalog);
        let gp = gpair.to_owned();
        let rprefix = rec.prefix.clone();
        let planned = tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .zip(records.iter())
                .map(|(path, (_, r))| {
                    if path.is_empty() {
                        return Plan::Nothing;
                    }
                    let key = west_key(&rprefix, path);
                    if let Op::SetAttr { attr } = r.op {
                        return plan_setattr(&join_rel(&root, path), &stub_attr, key, attr);
                    }
                    match EntryMeta::read(&join_rel(&root, path)) {
                        Ok(meta)
                            if matches!(r.op, Op::Put)
                                && catalog
                                    .get::<EntryRecord>(CF_ENTRIES, &gpair_key(&gp, path))
                                    .ok()
                                    .flatten()
                                    .is_some_and(|k| {
                                        !super::differs(&k.meta, &meta) && k.meta.ino == meta.ino
                                    }) =>
                        {
                            // West already shows exactly this (a stub's xattr, a punch).
                            Plan::Nothing
                        }
                        Ok(meta) => {
                            let is_dir = meta.kind == EntryKind::Dir;
                            Plan::Write {
                                op: BatchOp::Meta {
                                    key,
                                    meta: meta.clone(),
                                },
                                east: Some(meta),
                                is_dir,
                            }
                        }
                        Err(e) if !crate::tier::stub::is_gone(&e) => {
                            Plan::Unreadable(format!("east {}: {e}", String::from_utf8_lossy(path)))
                        }
                        Err(_) => {
                            let known: Option<EntryRecord> = catalog
                                .get(CF_ENTRIES, &gpair_key(&gp, path))
                                .unwrap_or(None);
                            let is_dir = match (&known, &r.op) {
                                (Some(k), _) => k.meta.kind == EntryKind::Dir,
                                (None, Op::Delete { is_dir }) => *is_dir,
                                (None, _) => return Plan::Nothing,
                            };
                            Plan::Write {
                                op: BatchOp::Delete { key, is_dir },
                                east: None,
                                is_dir,
                            }
                        }
                    }
                })
                .collect::<Vec<_>>()
                .into_iter()
                .zip(records)
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(planned) = planned else { return };
        let ops: Vec<BatchOp> = planned
            .iter()
            .filter_map(|(p, _)| match p {
                Plan::Write { op, .. } | Plan::Attr { op, .. } => Some(BatchOp::clone(op)),
                Plan::Nothing | Plan::Unreadable(_) | Plan::StaleRtl => None,
            })
            .collect();
        let results = if ops.is_empty() {
            Ok(Vec::new())
        } else {
            client.apply(&rec.bucket, &rec.gpair_value, &ops).await
        };
        let results = match results {
            Ok(r) => r,
            Err(e) if !e.is_permanent() => {
                self.record_transient(gpeer, &e);
                let mut q = lock(&self.queue);
                for (_, (key, _)) in planned {
                    q.finish(&key);
                    q.schedule(gpeer, key, now_ms(), None);
                }
                return;
            }
            Err(e) => vec![Err(e); ops.len()],
        };
        let mut results = results.into_iter();
        let mut batch = self.catalog.batch();
        let mut outcomes: Vec<(Vec<u8>, OutboxRecord, Result<(), WestError>)> =
            Vec::with_capacity(planned.len());
        let mut dir_deletes = Vec::new();
        let mut deleted: Vec<(Vec<u8>, bool)> = Vec::new();
        let mut written: Vec<(Vec<u8>, EntryMeta)> = Vec::new();
        let mut any_success = false;
        let mut attr_outcomes: Vec<(Vec<u8>, AttrOp, AttrOutcome)> = Vec::new();
        for (plan, (key, record)) in planned {
            let result = match plan {
                Plan::Nothing => Ok(()),
                Plan::Unreadable(why) => Err(WestError::permanent(why)),
                Plan::StaleRtl => {
                    attr_outcomes.push((key.clone(), AttrOp::Rtl, Ok(())));
                    Ok(())
                }
                Plan::Attr { attr, .. } => {
                    let r = results
                        .next()
                        .unwrap_or_else(|| Err(WestError::transient("missing batch result")));
                    match &r {
                        Ok(()) => {
                            any_success = true;
                            attr_outcomes.push((key.clone(), attr, Ok(())));
                        }
                        Err(e) if e.is_permanent() => {
                            attr_outcomes.push((key.clone(), attr, Err(e.to_string())));
                        }
                        Err(_) => {}
                    }
                    r
                }
                Plan::Write { east, is_dir, .. } => {
                    let r = results
                        .next()
                        .unwrap_or_else(|| Err(WestError::transient("missing batch result")));
                    if r.is_ok() {
                        any_success = true;
                        let exists = self
                            .catalog
                            .get_raw(CF_ENTRIES, &key)
                            .ok()
                            .flatten()
                            .is_some();
                        match east {
                            Some(meta) => {
                                if !exists {
                                    stats.entries.fetch_add(1, Ordering::Relaxed);
                                }
                                written.push((key[prefix_len..].to_vec(), meta.clone()));
                                batch.put(
                                    CF_ENTRIES,
                                    &key,
                                    &EntryRecord {
                                        meta,
                                        synced_at_ms: now_ms(),
                                    },
                                );
                            }
                            None => {
                                if exists {
                                    stats.entries.fetch_sub(1, Ordering::Relaxed);
                                }
                                batch.delete(CF_ENTRIES, &key);
                                deleted.push((key[prefix_len..].to_vec(), is_dir));
                                if is_dir {
                                    dir_deletes.push(key[prefix_len..].to_vec());
                                }
                            }
                        }
                    }
                    r
                }
            };
            outcomes.push((key, record, result));
        }
        // Unbound meanwhile: what this batch did is not recorded under the name.
        let committed = self.while_bound(gpair, &stats, || batch.commit());
        if let Some(Err(e)) = committed {
            tracing::error!(error = %e, "cannot record synced entries");
        }
        for (path, meta) in written {
            let abs = join_rel(&rec.local_path, &path);
            let replaced = self.quotas.forget_if_replaced(
                &self.catalog,
                gpair,
                &path,
                &abs,
                &meta,
                self.stub_attr(),
            );
            if let Err(e) = replaced {
                tracing::error!(error = %e, "cannot check a replaced file's remote record");
            }
        }
        for (path, is_dir) in deleted {
            // An offloaded file's west data went with it: its quota is free.
            if let Err(e) = self.quotas.forget_path(&self.catalog, gpair, &path, is_dir) {
                tracing::error!(error = %e, "cannot free the quota of a deleted file");
            }
        }
        if any_success {
            self.record_success(gpeer);
        }
        let mut transient: Option<WestError> = None;
        {
            let mut q = lock(&self.queue);
            let mut done = self.catalog.batch();
            for (key, record, result) in outcomes {
                match result {
                    Ok(()) => {
                        stats.applied.fetch_add(1, Ordering::Relaxed);
                        q.set_failing(&key, false);
                        if q.finish(&key) {
                            q.schedule(gpeer, key, now_ms(), None);
                        } else {
                            done.delete(CF_OUTBOX, &key);
                        }
                    }
                    Err(e) if !e.is_permanent() => {
                        q.finish(&key);
                        q.schedule(gpeer, key, now_ms(), None);
                        transient = Some(e);
                    }
                    Err(e) => {
                        let attempts = record.attempts + 1;
                        if q.finish(&key) {
                            q.schedule(gpeer, key, now_ms(), None);
                            continue;
                        }
                        tracing::warn!(gpair, path = %String::from_utf8_lossy(&key[prefix_len..]), error = %e, attempts, "sync of an entry failed");
                        let failed = OutboxRecord {
                            attempts,
                            last_error: Some(e.to_string()),
                            next_due_ms: now_ms() + self.backoff_ms(attempts),
                            ..record
                        };
                        done.put(CF_OUTBOX, &key, &failed);
                        q.set_failing(&key, true);
                        q.schedule(gpeer, key, failed.next_due_ms, None);
                    }
                }
            }
            if let Err(e) = done.commit() {
                tracing::error!(error = %e, "cannot update the outbox");
            }
        }
        if let Some(e) = transient {
            self.record_transient(gpeer, &e);
        }
        for (key, attr, outcome) in attr_outcomes {
            self.notify_attr(&key, attr, outcome);
        }
        for dir in dir_deletes {
            if let Err(e) = self.delete_subtree_children(&rec, &dir) {
                tracing::error!(error = %e, "cannot queue the deletion of a directory's entries");
            }
        }
    }
}

/// Plans a SetAttr record: an rtl whose path now holds a stub is stale (another offloaded file
/// renamed over it; releasing the object would drop that stub's only copy).
fn plan_setattr(
    abs: &std::path::Path,
    stub_attr: &str,
    key: crate::west::WestKey,
    attr: AttrOp,
) -> Plan {
    if attr == AttrOp::Rtl {
        match crate::tier::stub::read_path_if_present(abs, stub_attr) {
            Ok(Some(_)) => return Plan::StaleRtl,
            Ok(None) => {}
            Err(e) => return Plan::Unreadable(e.to_string()),
        }
    }
    Plan::Attr {
        op: BatchOp::SetAttr {
            key,
            attr: attr.west(),
        },
        attr,
    }
}
