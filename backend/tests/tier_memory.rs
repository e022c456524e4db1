//! The migration engine against the in-memory west and the fault wrapper, on a real east
//! directory (xattrs, hole punching, leases): offload and recall of small and multipart
//! files, idempotence, quotas, a write during an offload, transient west errors, a corrupt
//! west copy, and the resolution of intents left by a crash.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpair_backend::catalog::{gpair_key, Catalog, CF_INTENTS};
use gpair_backend::config::{SyncConfig, TierConfig};
use gpair_backend::registry::{GpairRecord, GpairState, GpeerRecord};
use gpair_backend::sync::{Engine, WestFactory};
use gpair_backend::tier::job::{JobKind, JobState, Outcome};
use gpair_backend::tier::quota::QuotaLimits;
use gpair_backend::tier::stub::{self, DataVersion};
use gpair_backend::tier::{Intent, TierState, Tiering};
use gpair_backend::west::fault::FaultyWest;
use gpair_backend::west::memory::MemoryWest;
use gpair_backend::west::{Dialect, ErrorKind, GpeerConn, WestStore};
use tokio_util::sync::CancellationToken;

const ATTR: &str = "user.gpair";

struct World<W: ?Sized = FaultyWest<MemoryWest>> {
    engine: Arc<Engine>,
    tiering: Arc<Tiering>,
    west: Arc<W>,
    share: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn world(quota: QuotaLimits) -> World {
    world_with(quota, 0).await
}

async fn world_with(quota: QuotaLimits, retain_deleted_days: u32) -> World {
    let memory = Arc::new(MemoryWest::new());
    memory.create_bucket("west").await.unwrap();
    world_over(
        Arc::new(FaultyWest::new(memory)),
        quota,
        retain_deleted_days,
    )
}

/// A world whose gpeer is `west` (bucket "west" must exist on it).
fn world_over<W: WestStore>(
    west: Arc<W>,
    quota: QuotaLimits,
    retain_deleted_days: u32,
) -> World<W> {
    let catalog_dir = tempfile::tempdir().unwrap();
    let share_dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(catalog_dir.path()).unwrap());
    let w2 = Arc::clone(&west);
    let factory: WestFactory = Arc::new(move |_| Arc::clone(&w2) as Arc<dyn WestStore>);
    let config = SyncConfig {
        workers: 4,
        watch: false,
        reconcile_interval: None,
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        gpeer_backoff_max: Duration::from_millis(200),
        batch: false,
        ..SyncConfig::default()
    };
    let cancel = CancellationToken::new();
    let engine = Engine::new(catalog, config, factory, cancel.clone());
    engine.add_gpeer(GpeerRecord {
        name: "g".into(),
        cluster_id: "LC_2".into(),
        conn: GpeerConn {
            endpoint: "http://memory".into(),
            access_key: "a".into(),
            secret_key: "s".into(),
            region: "us-east-1".into(),
            dialect: Dialect::Gateway,
        },
        created_at_ms: 0,
    });
    engine.start_workers();
    let share = share_dir.path().canonicalize().unwrap();
    engine.start_gpair(GpairRecord {
        name: "p".into(),
        gpeer: "g".into(),
        gpair_value: format!("LC_1,{},LC_2,/west/s", share.display()),
        local_path: share.clone(),
        bucket: "west".into(),
        prefix: "s".into(),
        state: GpairState::InitialSync,
        created_at_ms: 0,
        quota,
        retain_deleted_days,
        read_policy: Default::default(),
        recall_after_reads: 0,
        policy: None,
    });
    let tier = TierConfig {
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        ..TierConfig::default()
    };
    let tiering = Tiering::new(Arc::clone(&engine), tier, cancel);
    World {
        engine,
        tiering,
        west,
        share,
        _dirs: (catalog_dir, share_dir),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn offload_and_recall_through_the_s3_dialect_on_moto() {
    // Any S3: gpair-name as a tag, ltr drops the tag, rtl replaces the object by a
    // placeholder. moto stands in for it.
    let moto = common::Moto::start();
    let store = gpair_backend::west::connect(&GpeerConn {
        endpoint: moto.endpoint.clone(),
        access_key: "AKMOTOTEST0000000001".into(),
        secret_key: "moto-secret".into(),
        region: "us-east-1".into(),
        dialect: Dialect::S3,
    });
    store.create_bucket("west").await.unwrap();
    let w = world_over(Arc::new(FaultyWest::new(store)), QuotaLimits::default(), 0);
    let small = content(20, 70_000);
    let big = content(21, 11 << 20);
    let a = w.write("d/a", &small);
    let b = w.write("d/b", &big);
    let job = w.run(JobKind::Migrate, &[&w.share.join("d")]).await;
    assert_eq!(job.counters().files_done, 2, "{:?}", w.outcomes(job.id()));
    let s3 = w.west.inner();
    let e = s3
        .head(
            "west",
            &gpair_backend::west::keys::west_key("s", b"d/b"),
            false,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.data_len, e.gpair_name, e.crc32c),
        (big.len() as u64, None, Some(crc32c::crc32c(&big)))
    );
    assert_eq!(w.tiering.state(&a).state, TierState::Remote);
    let back = w.run(JobKind::Recall, &[&a, &b]).await;
    assert_eq!(back.counters().files_done, 2, "{:?}", w.outcomes(back.id()));
    assert_eq!(std::fs::read(&a).unwrap(), small);
    assert_eq!(std::fs::read(&b).unwrap(), big);
    w.drain().await;
    let e = s3
        .head(
            "west",
            &gpair_backend::west::keys::west_key("s", b"d/b"),
            false,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.data_len, 0, "a placeholder again");
    assert!(e.gpair_name.is_some());
}

/// Distinct bytes per file and offset.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl<W: ?Sized> World<W> {
    fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.share.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    async fn run(&self, kind: JobKind, paths: &[&Path]) -> Arc<gpair_backend::tier::job::JobRt> {
        let job = self
            .tiering
            .create_job(kind, paths.iter().map(|p| p.to_path_buf()).collect(), true)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !job.record().state.finished() {
            assert!(Instant::now() < deadline, "job did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        job
    }

    /// Waits until the outbox has applied everything queued.
    async fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.engine.queue_counts("p").0 > 0 {
            assert!(Instant::now() < deadline, "outbox did not drain");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn outcomes(&self, id: u64) -> Vec<(String, Outcome, String)> {
        outcomes_of(&self.tiering, id)
    }
}

impl World {
    fn object(&self, key: &str) -> Option<gpair_backend::west::memory::MemObject> {
        self.west.inner().object("west", key)
    }
}

fn outcomes_of(tiering: &Tiering, id: u64) -> Vec<(String, Outcome, String)> {
    {
        let (files, _) = tiering.job_files(id, 100);
        files
            .into_iter()
            .map(|(p, f)| {
                (
                    String::from_utf8_lossy(&p).into_owned(),
                    f.outcome,
                    f.reason,
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn offload_and_recall_small_and_multipart_files() {
    let w = world(QuotaLimits::default()).await;
    let small = content(1, 100_000);
    let large = content(2, 12 << 20); // three 5 MiB parts (the last one short)
    let a = w.write("d/small", &small);
    let b = w.write("d/large", &large);
    let mtime_before = DataVersion::of(&std::fs::metadata(&b).unwrap()).mtime_ns;
    let blocks_before = std::fs::metadata(&b).unwrap().blocks();

    let job = w.run(JobKind::Migrate, &[&w.share.join("d")]).await;
    assert_eq!(
        job.record().state,
        JobState::Done,
        "{:?}",
        w.outcomes(job.id())
    );
    let c = job.counters();
    assert_eq!(
        (c.files_done, c.bytes_done),
        (2, (small.len() + large.len()) as u64)
    );
    let r = job.record();
    assert!(r.started_ms > 0 && r.finished_ms >= r.started_ms, "{r:?}");

    // East: stubs with their size and mtime, data released, a stub record.
    for (p, data) in [(&a, &small), (&b, &large)] {
        let md = std::fs::metadata(p).unwrap();
        assert_eq!(md.len(), data.len() as u64);
        let s = stub::read_path(p, ATTR).unwrap().expect("stub record");
        assert_eq!(s.crc32c, crc32c::crc32c(data));
        assert_eq!(w.tiering.state(p).state, TierState::Remote);
    }
    let md = std::fs::metadata(&b).unwrap();
    assert_eq!(DataVersion::of(&md).mtime_ns, mtime_before);
    assert!(md.blocks() < blocks_before / 10, "{} blocks", md.blocks());
    // West: the data, owned by west.
    w.drain().await;
    let obj = w.object("s/d/large").unwrap();
    assert_eq!(obj.data, large);
    assert_eq!(obj.gpair_name, None);
    assert_eq!(w.engine.quotas.usage("p").used_files, 2);

    // Migrating again is a no-op reported as such.
    let again = w.run(JobKind::Migrate, &[&a]).await;
    assert_eq!(again.counters().noop, 1);
    assert_eq!(w.outcomes(again.id())[0].2, "already remote");

    // Recall brings the same bytes back into the same inode; west is a placeholder again.
    let ino = std::fs::metadata(&b).unwrap().ino();
    let back = w.run(JobKind::Recall, &[&a, &b]).await;
    assert_eq!(
        back.record().state,
        JobState::Done,
        "{:?}",
        w.outcomes(back.id())
    );
    assert_eq!(std::fs::read(&b).unwrap(), large);
    assert_eq!(std::fs::read(&a).unwrap(), small);
    assert_eq!(std::fs::metadata(&b).unwrap().ino(), ino);
    assert_eq!(
        DataVersion::of(&std::fs::metadata(&b).unwrap()).mtime_ns,
        mtime_before
    );
    assert!(stub::read_path(&b, ATTR).unwrap().is_none());
    w.drain().await;
    let obj = w.object("s/d/large").unwrap();
    assert!(
        obj.placeholder && obj.data.is_empty(),
        "{:?}",
        obj.gpair_name
    );
    assert!(obj.gpair_name.is_some());
    assert_eq!(w.engine.quotas.usage("p").used_files, 0);
    // Recalling a local file is a no-op.
    let noop = w.run(JobKind::Recall, &[&a]).await;
    assert_eq!(noop.counters().noop, 1);
    assert!(w.tiering.intents_left().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_refusals_are_skips_not_failures() {
    let w = world(QuotaLimits {
        max_bytes: 250,
        max_files: 10,
    })
    .await;
    let files: Vec<PathBuf> = (0..4)
        .map(|i| w.write(&format!("f{i}"), &content(i, 100)))
        .collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let job = w.run(JobKind::Migrate, &refs).await;
    let c = job.counters();
    assert_eq!((c.files_done, c.skipped, c.failed), (2, 2, 0));
    assert_eq!(job.record().state, JobState::Done);
    assert!(w
        .outcomes(job.id())
        .iter()
        .all(|(_, o, r)| *o == Outcome::Skipped && r.starts_with("quota:")));
    assert_eq!(w.engine.quotas.usage("p").used_bytes, 200);
    assert_eq!(w.engine.quotas.usage("p").reserved_bytes, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_during_the_offload_aborts_it_and_west_stays_a_placeholder() {
    let w = world(QuotaLimits::default()).await;
    let p = w.write("busy", &content(3, 50_000));
    // Slow west: the upload takes long enough for a write to land in the middle.
    w.west.set_latency(Duration::from_millis(400));
    let tiering = Arc::clone(&w.tiering);
    let p2 = p.clone();
    let job = tokio::spawn(async move {
        tiering
            .create_job(JobKind::Migrate, vec![p2], false)
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::write(&p, b"new content").unwrap();
    let job = job.await.unwrap();
    while !job.record().state.finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.west.set_latency(Duration::ZERO);
    assert_eq!(job.counters().dirty, 1, "{:?}", w.outcomes(job.id()));
    assert_eq!(job.record().state, JobState::Done, "dirty is not a failure");
    assert_eq!(std::fs::read(&p).unwrap(), b"new content");
    assert!(stub::read_path(&p, ATTR).unwrap().is_none());
    assert_eq!(w.tiering.state(&p).state, TierState::Dirty);
    w.drain().await;
    // Never "west data deleted but still marked as owner": a placeholder, gpair-name set.
    let obj = w.object("s/busy").unwrap();
    assert!(obj.gpair_name.is_some() && obj.data.is_empty());
    assert_eq!(w.engine.quotas.usage("p").reserved_files, 0);
    // The next run offloads it.
    let again = w.run(JobKind::Migrate, &[&p]).await;
    assert_eq!(again.counters().files_done, 1);
    assert_eq!(w.tiering.state(&p).state, TierState::Remote);
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_west_errors_make_the_job_wait_not_fail() {
    let w = world(QuotaLimits::default()).await;
    let p = w.write("f", &content(4, 10_000));
    w.west.fail_next(3, ErrorKind::Transient);
    let job = w.run(JobKind::Migrate, &[&p]).await;
    assert_eq!(
        job.record().state,
        JobState::Done,
        "{:?}",
        w.outcomes(job.id())
    );
    assert_eq!(job.counters().files_done, 1);
    w.west.fail_next(3, ErrorKind::Transient);
    let back = w.run(JobKind::Recall, &[&p]).await;
    assert_eq!(back.counters().files_done, 1);
    assert_eq!(std::fs::read(&p).unwrap(), content(4, 10_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_missing_west_copy_is_refused_and_the_stub_kept() {
    let w = world(QuotaLimits::default()).await;
    let data = content(5, 300_000);
    let p = w.write("c", &data);
    let q = w.write("m", &data);
    w.run(JobKind::Migrate, &[&p, &q]).await;
    w.drain().await;
    // Corrupt one copy behind our back (same size, same metadata), delete the other.
    let mut obj = w.object("s/c").unwrap();
    obj.data[100] ^= 0xff;
    w.west.inner().ops().insert_object("west", "s/c", obj);
    w.west.inner().ops().remove_object("west", "s/m");
    let job = w.run(JobKind::Recall, &[&p, &q]).await;
    assert_eq!(job.record().state, JobState::Failed);
    let outcomes = w.outcomes(job.id());
    assert!(
        outcomes.iter().any(|(_, _, r)| r.contains("corrupt")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|(_, _, r)| r.contains("missing")),
        "{outcomes:?}"
    );
    for (f, st) in [(&p, TierState::Conflict), (&q, TierState::Lost)] {
        assert!(stub::read_path(f, ATTR).unwrap().is_some(), "stub kept");
        assert_eq!(w.tiering.state(f).state, st);
        let blocks = std::fs::metadata(f).unwrap().blocks();
        assert!(
            blocks * 512 < 300_000 / 4,
            "partial data released again: {f:?} {blocks} blocks"
        );
    }
    assert!(w.tiering.intents_left().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_rolls_back_or_finishes_interrupted_offloads() {
    let w = world(QuotaLimits::default()).await;
    // An offload that crashed after its upload (no stub record): rolled back.
    let a = w.write("a", &content(6, 5000));
    let dv = DataVersion::of(&std::fs::metadata(&a).unwrap());
    w.west
        .inner()
        .put_data(
            "west",
            &gpair_backend::west::keys::west_key("s", b"a"),
            content(6, 5000),
            &gpair_backend::entry::EntryMeta::read(&a).unwrap(),
            Some(&w.engine.gpair("p").unwrap().0.gpair_value),
        )
        .unwrap();
    let intent = |dv| Intent {
        kind: JobKind::Migrate,
        job: 0,
        dv,
        started_ms: 1,
        upload: None,
    };
    // An offload that crashed after its stub record, before the punch: finished.
    let data = content(7, 70_000);
    let b = w.write("b", &data);
    let job = w.run(JobKind::Migrate, &[&b]).await;
    assert_eq!(job.counters().files_done, 1);
    let s = stub::read_path(&b, ATTR).unwrap().unwrap();
    let recall = w.run(JobKind::Recall, &[&b]).await;
    assert_eq!(recall.counters().files_done, 1);
    w.drain().await;
    // Re-create the "after the stub record" state by hand: data on west owned by west, stub
    // record on the file with its data still there.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&b)
        .unwrap();
    let obj_meta = gpair_backend::entry::EntryMeta::read(&b).unwrap();
    w.west
        .inner()
        .put_data(
            "west",
            &gpair_backend::west::keys::west_key("s", b"b"),
            data.clone(),
            &obj_meta,
            None,
        )
        .unwrap();
    let dvb = DataVersion::of(&f.metadata().unwrap());
    let mut s2 = s.clone();
    s2.offloaded = dvb;
    s2.mtime_ns = dvb.mtime_ns;
    stub::write_fd(&f, ATTR, &s2).unwrap();
    w.engine
        .catalog
        .put(CF_INTENTS, &gpair_key("p", b"b"), &intent(dvb))
        .unwrap();

    // (Written last: while an intent is in flight, metadata updates of its file wait.)
    w.engine
        .catalog
        .put(CF_INTENTS, &gpair_key("p", b"a"), &intent(dv))
        .unwrap();
    let done = w.tiering.recover().unwrap();
    assert_eq!(done.offloads_rolled_back, 1);
    assert_eq!(done.offloads_finished, 1);
    assert!(w.tiering.intents_left().is_empty());
    w.drain().await;
    let obj = w.object("s/a").unwrap();
    assert!(
        obj.gpair_name.is_some() && obj.data.is_empty(),
        "rolled back to a placeholder"
    );
    assert_eq!(std::fs::read(&a).unwrap(), content(6, 5000));
    assert_eq!(w.tiering.state(&b).state, TierState::Remote);
    let blocks = std::fs::metadata(&b).unwrap().blocks();
    assert!(blocks * 512 < 70_000 / 4, "{blocks} blocks");
    assert_eq!(w.engine.quotas.usage("p").used_files, 1);
    // And it recalls with the right bytes.
    let back = w.run(JobKind::Recall, &[&b]).await;
    assert_eq!(back.counters().files_done, 1, "{:?}", w.outcomes(back.id()));
    assert_eq!(std::fs::read(&b).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_selections_are_refused_with_the_path_named() {
    let w = world(QuotaLimits::default()).await;
    let dir = w.share.join("dir");
    std::fs::create_dir_all(&dir).unwrap();
    let err = w
        .tiering
        .create_job(JobKind::Migrate, vec![dir.clone()], false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--recursive") && err.contains("/dir"), "{err}");
    let err = w
        .tiering
        .create_job(JobKind::Migrate, vec![w.share.join("nope")], false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    let outside = tempfile::tempdir().unwrap();
    let err = w
        .tiering
        .create_job(JobKind::Migrate, vec![outside.path().to_path_buf()], true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not under the share"), "{err}");
    assert!(w.tiering.jobs(10).is_empty(), "nothing created");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_stubs_keep_their_west_data_for_the_retention_then_it_is_purged() {
    let w = world_with(QuotaLimits::default(), 3).await;
    let data = content(8, 20_000);
    let p = w.write("keep/me", &data);
    let plain = w.write("plain", b"local only");
    w.run(JobKind::Migrate, &[&p]).await;
    w.drain().await;
    std::fs::remove_file(&p).unwrap();
    std::fs::remove_file(&plain).unwrap();
    w.engine
        .enqueue_batch(
            "p",
            vec![
                (
                    b"keep/me".to_vec(),
                    gpair_backend::sync::Op::Delete { is_dir: false },
                ),
                (
                    b"plain".to_vec(),
                    gpair_backend::sync::Op::Delete { is_dir: false },
                ),
            ],
            0,
        )
        .unwrap();
    w.drain().await;
    let keys = w.west.inner().keys("west");
    assert!(!keys.contains(&"s/keep/me".to_string()), "{keys:?}");
    let trash: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with(".gpair-trash/p/"))
        .collect();
    assert_eq!(trash.len(), 1, "only the offloaded file is kept: {keys:?}");
    assert!(trash[0].ends_with("/s/keep/me"), "{trash:?}");
    assert_eq!(w.object(trash[0]).unwrap().data, data);
    assert_eq!(w.engine.quotas.usage("p").used_files, 0);
    // Not yet past its retention: kept; three days later: purged.
    let now = gpair_proto::now_ms();
    assert_eq!(w.tiering.purge_trash(now + 86_400_000).await, 0);
    assert_eq!(
        w.tiering.purge_trash(now + 3 * 86_400_000 + 60_000).await,
        1
    );
    assert!(w
        .west
        .inner()
        .keys("west")
        .iter()
        .all(|k| !k.starts_with(".gpair-trash")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stub_deleted_and_recreated_at_the_same_path_frees_its_quota() {
    let w = world(QuotaLimits::default()).await;
    let p = w.write("again", &content(9, 10_000));
    w.run(JobKind::Migrate, &[&p]).await;
    assert_eq!(w.engine.quotas.usage("p").used_files, 1);
    // Tiny stubs release their last partial block too.
    let tiny = w.write("tiny", b"22 bytes of something.");
    w.run(JobKind::Migrate, &[&tiny]).await;
    let blocks = std::fs::metadata(&tiny).unwrap().blocks();
    assert!(
        blocks * 512 <= 4096,
        "only an xattr block may remain: {blocks} blocks"
    );
    // rm + create in one breath: the watcher reports one change, a put of the new file.
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, b"new").unwrap();
    w.engine
        .enqueue("p", b"again", gpair_backend::sync::Op::Put, 0)
        .unwrap();
    w.drain().await;
    assert_eq!(
        w.engine.quotas.usage("p").used_files,
        1,
        "only tiny is offloaded"
    );
    assert_eq!(w.tiering.state(&p).state, TierState::Local);
    assert_eq!(w.tiering.state(&p).offloaded_at_ms, 0);
    // Offloading the new file counts it once.
    w.run(JobKind::Migrate, &[&p]).await;
    assert_eq!(w.engine.quotas.usage("p").used_files, 2);
    assert_eq!(w.engine.quotas.usage("p").used_bytes, 3 + 22);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rename_sync_saw_as_delete_and_create_still_recalls_from_the_trash() {
    let w = world(QuotaLimits::default()).await;
    let data = content(10, 30_000);
    let a = w.write("a/x", &data);
    w.run(JobKind::Migrate, &[&a]).await;
    w.drain().await;
    // Renamed while nobody watched: sync sees the old path gone and a new one.
    std::fs::create_dir_all(w.share.join("b")).unwrap();
    let b = w.share.join("b/y");
    std::fs::rename(&a, &b).unwrap();
    w.engine
        .enqueue_batch(
            "p",
            vec![
                (
                    b"a/x".to_vec(),
                    gpair_backend::sync::Op::Delete { is_dir: false },
                ),
                (b"b/y".to_vec(), gpair_backend::sync::Op::Put),
            ],
            0,
        )
        .unwrap();
    w.drain().await;
    assert!(w.object("s/a/x").is_none());
    let back = w.run(JobKind::Recall, &[&b]).await;
    assert_eq!(back.counters().files_done, 1, "{:?}", w.outcomes(back.id()));
    assert_eq!(std::fs::read(&b).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metadata_update_never_overwrites_data_west_owns() {
    let w = world(QuotaLimits::default()).await;
    let data = content(11, 30_000);
    let p = w.write("owned", &data);
    w.run(JobKind::Migrate, &[&p]).await;
    w.drain().await;
    // Written on east behind the stub's back: the update is refused, west keeps the copy.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"))
        .unwrap();
    w.engine
        .enqueue("p", b"owned", gpair_backend::sync::Op::Put, 0)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.engine.failures("p", 10).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the update should fail, not apply"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        w.object("s/owned").unwrap().data,
        data,
        "west's copy intact"
    );
    assert_eq!(w.tiering.state(&p).state, TierState::Conflict);
    // A different, local file at the path: west's data goes to the trash, then the placeholder.
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, b"brand new").unwrap();
    w.engine
        .enqueue("p", b"owned", gpair_backend::sync::Op::Put, 0)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.object("s/owned").is_some_and(|o| !o.placeholder) {
        assert!(Instant::now() < deadline, "placeholder never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept: Vec<String> = w
        .west
        .inner()
        .keys("west")
        .into_iter()
        .filter(|k| k.starts_with(".gpair-trash/") && k.ends_with("/s/owned"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(w.object(&kept[0]).unwrap().data, data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_directory_never_leads_out_of_the_share() {
    let w = world(QuotaLimits::default()).await;
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, content(12, 9000)).unwrap();
    std::os::unix::fs::symlink(outside.path(), w.share.join("evil")).unwrap();
    let job = w
        .run(JobKind::Migrate, &[&w.share.join("evil/victim")])
        .await;
    assert_eq!(job.counters().skipped, 1, "{:?}", w.outcomes(job.id()));
    assert_eq!(std::fs::read(&victim).unwrap(), content(12, 9000));
    assert!(stub::read_path(&victim, ATTR).unwrap().is_none());
}
