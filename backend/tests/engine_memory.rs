//! The sync engine against the in-memory west and the fault wrapper: no gateway, no HTTP,
//! just the engine's rules — scans, coalescing, renames, backoff of a failing entry, and a
//! gpeer outage that pauses work and resumes it.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpair_backend::catalog::Catalog;
use gpair_backend::config::SyncConfig;
use gpair_backend::registry::{GpairRecord, GpairState, GpeerRecord};
use gpair_backend::sync::{Engine, WestFactory};
use gpair_backend::west::fault::FaultyWest;
use gpair_backend::west::memory::MemoryWest;
use gpair_backend::west::{Dialect, ErrorKind, GpeerConn, WestStore};
use tokio_util::sync::CancellationToken;

struct World {
    engine: Arc<Engine>,
    west: Arc<FaultyWest<MemoryWest>>,
    share: tempfile::TempDir,
    _catalog: tempfile::TempDir,
}

async fn world(watch: bool) -> World {
    let catalog_dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(catalog_dir.path()).unwrap());
    let memory = Arc::new(MemoryWest::new());
    memory.create_bucket("west").await.unwrap();
    let west = Arc::new(FaultyWest::new(memory));
    let w2 = Arc::clone(&west);
    let factory: WestFactory = Arc::new(move |_| Arc::clone(&w2) as Arc<dyn WestStore>);
    let config = SyncConfig {
        workers: 4,
        watch,
        reconcile_interval: None,
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        gpeer_backoff_max: Duration::from_millis(200),
        batch: false,
        ..SyncConfig::default()
    };
    let engine = Engine::new(catalog, config, factory, CancellationToken::new());
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
    World {
        engine,
        west,
        share: tempfile::tempdir().unwrap(),
        _catalog: catalog_dir,
    }
}

impl World {
    fn bind(&self) {
        let local = self.share.path().canonicalize().unwrap();
        self.engine.start_gpair(GpairRecord {
            name: "p".into(),
            gpeer: "g".into(),
            gpair_value: format!("LC_1,{},LC_2,/west/s", local.display()),
            local_path: local,
            bucket: "west".into(),
            prefix: "s".into(),
            state: GpairState::InitialSync,
            created_at_ms: 0,
            quota: Default::default(),
            retain_deleted_days: 0,
            read_policy: Default::default(),
            recall_after_reads: 0,
            policy: None,
        });
    }

    fn keys(&self) -> Vec<String> {
        self.west.inner().keys("west")
    }

    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (pending, _) = self.engine.queue_counts("p");
            let scanned = self
                .engine
                .gpair("p")
                .is_some_and(|(r, _)| r.state == GpairState::Active);
            if pending == 0 && scanned {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "did not settle: {pending} pending, keys {:?}",
                self.keys()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_scan_mirrors_the_share_and_rescans_are_idempotent() {
    let w = world(false).await;
    std::fs::create_dir_all(w.share.path().join("a/b")).unwrap();
    std::fs::write(w.share.path().join("a/b/f"), b"x").unwrap();
    std::fs::write(w.share.path().join("top"), b"y").unwrap();
    w.bind();
    w.settle().await;
    assert_eq!(w.keys(), ["s/a/", "s/a/b/", "s/a/b/f", "s/top"]);
    let calls = w.west.calls();
    // A second scan of an unchanged share queues nothing and calls west for nothing.
    let rec = w.engine.gpair("p").unwrap().0;
    let stats =
        gpair_backend::sync::scan::scan_share(&w.engine, &rec, &CancellationToken::new()).unwrap();
    assert_eq!((stats.queued_puts, stats.queued_deletes), (0, 0));
    w.settle().await;
    assert_eq!(w.west.calls(), calls);
}

#[tokio::test(flavor = "multi_thread")]
async fn watcher_changes_coalesce_and_renames_move_subtrees() {
    let w = world(true).await;
    std::fs::create_dir_all(w.share.path().join("d")).unwrap();
    w.bind();
    w.settle().await;
    let before = w.west.calls();
    for i in 0..50 {
        std::fs::write(w.share.path().join("d/hot"), format!("{i}")).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    w.settle().await;
    // Fifty writes inside the settle window: a handful of west calls, not fifty.
    assert!(
        w.west.calls() - before < 20,
        "{} west calls for 50 writes",
        w.west.calls() - before
    );
    std::fs::rename(w.share.path().join("d"), w.share.path().join("e")).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    w.settle().await;
    assert_eq!(w.keys(), ["s/e/", "s/e/hot"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_entry_backs_off_alone_and_an_outage_pauses_then_resumes() {
    let w = world(false).await;
    for i in 0..20 {
        std::fs::write(w.share.path().join(format!("f{i:02}")), b"x").unwrap();
    }
    w.west.fail_key("s/f07", ErrorKind::Permanent);
    w.bind();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (pending, failing) = w.engine.queue_counts("p");
        if pending == 1 && failing == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pending {pending} failing {failing}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(w.keys().len(), 19, "every other entry synced");
    let failures = w.engine.failures("p", 10);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, b"f07");
    assert!(failures[0].1.attempts >= 1 && failures[0].1.last_error.is_some());
    assert!(
        w.engine.gpeer_health("g").unwrap().consecutive_failures == 0,
        "a permanent error is not an outage"
    );

    // An outage: transient failures pause the gpeer; nothing is dropped; work resumes.
    w.west.clear_key("s/f07");
    w.west.fail_next(5, ErrorKind::Transient);
    std::fs::write(w.share.path().join("late"), b"z").unwrap();
    w.engine
        .enqueue("p", b"late", gpair_backend::sync::Op::Put, 0)
        .unwrap();
    w.settle().await;
    let keys = w.keys();
    assert_eq!(keys.len(), 21, "{keys:?}");
    assert_eq!(w.engine.queue_counts("p"), (0, 0));
    let h = w.engine.gpeer_health("g").unwrap();
    assert!(h.last_error_at_ms > 0, "the outage was recorded");
    assert_eq!(h.consecutive_failures, 0, "healthy again");
}
