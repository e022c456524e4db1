//! Shared by the west integration tests: servers on loopback (the real s3fs-gateway binary,
//! moto), entry builders, and the behaviours every dialect must show.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use gpair_backend::entry::{EntryKind, EntryMeta};
use gpair_backend::west::entries::entry_metadata;
use gpair_backend::west::keys::{self, west_key, WestKey, LONG_PREFIX};
use gpair_backend::west::{Dialect, ErrorKind, SetAttr, WestEntry, WestStore};

pub const GPAIR: &str = "LC_111,/east/share,LC_222,west-bucket/mirror";
pub const OTHER_GPAIR: &str = "LC_111,/east/other,LC_222,west-bucket/other";

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// Path of a workspace binary: `$GPAIR_BIN_DIR/name`, else `target/<profile>/name`.
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("GPAIR_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary {} not found; run `cargo build -p s3fs-gateway` first",
        path.display()
    );
    path
}

/// Waits for a line starting with `marker` on `reader`; returns the rest of the line.
fn wait_for_line(
    reader: impl std::io::Read + Send + 'static,
    marker: &'static str,
    timeout: Duration,
) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(pos) = line.find(marker) {
                    let _ = tx.send(line[pos + marker.len()..].trim().to_string());
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(timeout).ok()
}

/// A running s3fs-gateway with its own root.
pub struct Gateway {
    child: Child,
    pub addr: String,
    pub root: PathBuf,
    pub access_key: String,
    pub secret_key: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub fn start() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("west");
        std::fs::create_dir_all(&root).unwrap();
        let access_key = "AKWESTTESTBACKEND001".to_string();
        let secret_key = "west-test-backend-secret-0000000000001".to_string();
        let creds = dir.path().join("credentials.toml");
        std::fs::write(
            &creds,
            format!(
                "[[keys]]\naccess_key = \"{access_key}\"\nsecret_key = \"{secret_key}\"\nrole = \"backend\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!("credentials = \"{}\"\nfsync = false\n", creds.display()),
        )
        .unwrap();
        let log = dir.path().join("gateway.log");
        let mut child = Command::new(bin_path("s3fs-gateway"))
            .arg("--root")
            .arg(&root)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let Some(addr) = wait_for_line(
            stdout,
            "s3fs-gateway listening on http://",
            Duration::from_secs(30),
        ) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "s3fs-gateway did not start; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Gateway {
            child,
            addr,
            root,
            access_key,
            secret_key,
            log,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running moto server (`python3 -m moto.server`) on 127.0.0.1.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let spawned = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run `python3 -m moto.server`: {e}; install moto with \
                 `pip install 'moto[server]'` (scripts/test.sh does)"
            ),
        };
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut all = String::new();
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    all.push_str(&line);
                    all.push('\n');
                    if let Some(pos) = line.find("Running on http://") {
                        let _ = tx.send(Ok(line[pos + "Running on ".len()..].trim().to_string()));
                        sent = true;
                    }
                }
            }
            if !sent {
                let _ = tx.send(Err(all));
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(endpoint)) => Moto { child, endpoint },
            Ok(Err(output)) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "moto server exited before listening (is `moto[server]` installed? \
                     scripts/test.sh installs it); output:\n{output}"
                )
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("moto server did not print its address within 60 s")
            }
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An aws-sdk-s3 client of our own, to look at and prepare objects below the store.
pub fn raw_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let creds = aws_credential_types::Credentials::from_keys(access_key, secret_key, None);
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .force_path_style(true)
        // The gateway keeps the checksums of released data on a placeholder after
        // rtl_remote_to_local, so a validating GET of the (empty) placeholder fails with
        // ChecksumMismatch. Reported to the gateway's owner; our store never GETs.
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Entries
// ---------------------------------------------------------------------------------------------

pub fn meta(kind: EntryKind, size: u64, ino: u64) -> EntryMeta {
    let type_bits = match kind {
        EntryKind::File => libc::S_IFREG,
        EntryKind::Dir => libc::S_IFDIR,
        EntryKind::Symlink => libc::S_IFLNK,
        EntryKind::Fifo => libc::S_IFIFO,
        EntryKind::Socket => libc::S_IFSOCK,
        EntryKind::CharDev => libc::S_IFCHR,
        EntryKind::BlockDev => libc::S_IFBLK,
    };
    let perm = if kind == EntryKind::Dir { 0o755 } else { 0o640 };
    EntryMeta {
        kind,
        size,
        mode: type_bits | perm,
        uid: 1000 + (ino % 7) as u32,
        gid: 2000 + (ino % 5) as u32,
        mtime_ns: 1_600_000_000_123_456_789 + ino as i64,
        ctime_ns: 1_600_000_001_000_000_000,
        ino,
        nlink: 1,
        rdev: 0,
        symlink_target: None,
    }
}

pub fn file(size: u64, ino: u64) -> EntryMeta {
    meta(EntryKind::File, size, ino)
}

pub fn dir(ino: u64) -> EntryMeta {
    meta(EntryKind::Dir, 0, ino)
}

/// Asserts that a west entry carries the metadata of `m`.
pub fn assert_meta(e: &WestEntry, m: &EntryMeta, what: &str) {
    assert_eq!(e.mode, Some(m.mode), "{what}: mode");
    assert_eq!(e.uid, Some(m.uid), "{what}: uid");
    assert_eq!(e.gid, Some(m.gid), "{what}: gid");
    assert_eq!(e.mtime_ns, Some(m.mtime_ns), "{what}: mtime");
    assert_eq!(e.logical_size, Some(m.size), "{what}: logical size");
    assert_eq!(e.is_dir, m.kind == EntryKind::Dir, "{what}: is_dir");
    assert_eq!(e.symlink_target, m.symlink_target, "{what}: symlink target");
}

/// `list` as a map rel path → entry, checking key order on the way.
pub async fn listing(
    store: &dyn WestStore,
    bucket: &str,
    prefix: &str,
) -> BTreeMap<Vec<u8>, WestEntry> {
    let list = store.list(bucket, prefix).await.unwrap();
    for w in list.windows(2) {
        assert!(
            w[0].key < w[1].key,
            "list is not in key order: {:?} then {:?}",
            w[0].key,
            w[1].key
        );
    }
    let n = list.len();
    let map: BTreeMap<_, _> = list.into_iter().map(|e| (e.rel_path.clone(), e)).collect();
    assert_eq!(map.len(), n, "two entries with one rel path");
    map
}

/// What the tests do below the store: put data as an offload would (the trait has no
/// upload), read bytes back, list raw keys.
#[async_trait::async_trait]
pub trait Below: Send + Sync {
    /// A PUT with a body, the entry's metadata and, optionally, gpair-name.
    async fn upload(
        &self,
        bucket: &str,
        key: &WestKey,
        data: &[u8],
        m: &EntryMeta,
        gpair_name: Option<&str>,
    );
    /// The object's bytes (GET); `None` if it does not exist.
    async fn get_bytes(&self, bucket: &str, key: &str) -> Option<Vec<u8>>;
    /// Every object key in the bucket.
    async fn all_keys(&self, bucket: &str) -> Vec<String>;
}

/// [`Below`] over S3 (the gateway or moto).
pub struct S3Below {
    pub client: aws_sdk_s3::Client,
    pub dialect: Dialect,
}

#[async_trait::async_trait]
impl Below for S3Below {
    async fn upload(
        &self,
        bucket: &str,
        key: &WestKey,
        data: &[u8],
        m: &EntryMeta,
        gpair_name: Option<&str>,
    ) {
        let mut req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(&key.key)
            .body(ByteStream::from(data.to_vec()))
            .set_metadata(Some(entry_metadata(m, key).into_iter().collect()));
        if self.dialect == Dialect::S3 {
            if let Some(n) = gpair_name {
                req = req.tagging(format!(
                    "gpair-name={}",
                    gpair_backend::west::s3::encode_tag_value(n)
                ));
            }
        }
        let header = gpair_name
            .filter(|_| self.dialect == Dialect::Gateway)
            .map(str::to_owned);
        req.customize()
            .mutate_request(move |r| {
                if let Some(h) = &header {
                    r.headers_mut().insert("x-gpair-name", h.clone());
                }
            })
            .send()
            .await
            .unwrap();
    }

    async fn get_bytes(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
            Err(e) => {
                assert_eq!(
                    e.raw_response().map(|r| r.status().as_u16()),
                    Some(404),
                    "GET {key}: {e:?}"
                );
                None
            }
        }
    }

    async fn all_keys(&self, bucket: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        out
    }
}

/// [`Below`] over the in-memory store.
pub struct MemBelow(pub std::sync::Arc<gpair_backend::west::memory::MemoryWest>);

#[async_trait::async_trait]
impl Below for MemBelow {
    async fn upload(
        &self,
        bucket: &str,
        key: &WestKey,
        data: &[u8],
        m: &EntryMeta,
        gpair_name: Option<&str>,
    ) {
        self.0
            .put_data(bucket, key, data.to_vec(), m, gpair_name)
            .unwrap();
    }

    async fn get_bytes(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.0.object(bucket, key).map(|o| o.data)
    }

    async fn all_keys(&self, bucket: &str) -> Vec<String> {
        self.0.keys(bucket)
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviours every dialect must show
// ---------------------------------------------------------------------------------------------

pub async fn buckets(store: &dyn WestStore) {
    assert!(!store.bucket_exists("fresh-bucket").await.unwrap());
    store.create_bucket("fresh-bucket").await.unwrap();
    assert!(store.bucket_exists("fresh-bucket").await.unwrap());
    store.create_bucket("fresh-bucket").await.unwrap(); // idempotent
    assert!(store.check(Some("fresh-bucket")).await.is_ok());
    assert!(store.check(None).await.is_ok());
}

/// put/head/list/delete of every kind of entry, with their metadata.
pub async fn entries_of_every_kind(store: &dyn WestStore, bucket: &str) {
    let p = "mirror";
    let f = file(12345, 11);
    let d = dir(12);
    let mut link = meta(EntryKind::Symlink, 9, 13);
    link.symlink_target = Some(b"../t\xffarget".to_vec());
    let fifo = meta(EntryKind::Fifo, 0, 14);
    let mut cdev = meta(EntryKind::CharDev, 0, 15);
    cdev.rdev = (1 << 8) | 3;
    let sock = meta(EntryKind::Socket, 0, 16);
    let mut old = file(5, 17);
    old.mtime_ns = -86_400_500_000_000; // before 1970
    let entries: Vec<(&[u8], &EntryMeta)> = vec![
        (b"", &d), // the share root
        (b"file.txt", &f),
        (b"sub", &d),
        (b"sub/link", &link),
        (b"sub/fifo", &fifo),
        (b"sub/null", &cdev),
        (b"sub/sock", &sock),
        (b"old", &old),
    ];
    for (rel, m) in &entries {
        let k = west_key(p, rel);
        store.put_entry(bucket, &k, m, GPAIR).await.unwrap();
        // Idempotent.
        store.put_entry(bucket, &k, m, GPAIR).await.unwrap();
    }
    for (rel, m) in &entries {
        let k = west_key(p, rel);
        let e = store
            .head(bucket, &k, m.kind == EntryKind::Dir)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("head {rel:?}"));
        assert_meta(&e, m, &String::from_utf8_lossy(rel));
        assert_eq!(e.data_len, 0);
        assert_eq!(e.key, k.key);
        if m.kind == EntryKind::File {
            assert_eq!(
                e.gpair_name.as_deref(),
                Some(GPAIR),
                "placeholder of {rel:?}"
            );
        } else {
            assert_eq!(e.gpair_name, None, "{rel:?}");
        }
    }
    // The listing decodes every rel path and carries the same metadata.
    let l = listing(store, bucket, p).await;
    assert_eq!(l.len(), entries.len(), "{:?}", l.keys().collect::<Vec<_>>());
    for (rel, m) in &entries {
        let e = &l[&rel.to_vec()];
        assert_meta(e, m, &String::from_utf8_lossy(rel));
    }
    // A file in another share with a similar prefix is not listed.
    store
        .put_entry(bucket, &west_key("mirrored", b"x"), &file(1, 99), GPAIR)
        .await
        .unwrap();
    assert_eq!(listing(store, bucket, p).await.len(), entries.len());
    // A subtree.
    let sub = listing(store, bucket, "mirror/sub").await;
    assert_eq!(
        sub.keys().cloned().collect::<Vec<_>>(),
        vec![
            b"".to_vec(),
            b"fifo".to_vec(),
            b"link".to_vec(),
            b"null".to_vec(),
            b"sock".to_vec()
        ]
    );

    // Delete: idempotent; the directory marker needs is_dir.
    for (rel, m) in &entries {
        let k = west_key(p, rel);
        let is_dir = m.kind == EntryKind::Dir;
        store.delete_entry(bucket, &k, is_dir).await.unwrap();
        store.delete_entry(bucket, &k, is_dir).await.unwrap();
        assert_eq!(
            store.head(bucket, &k, is_dir).await.unwrap(),
            None,
            "{rel:?}"
        );
    }
    assert!(listing(store, bucket, p).await.is_empty());
    // Missing bucket: permanent.
    let e = store
        .put_entry("no-such-bucket", &west_key(p, b"f"), &f, GPAIR)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
}

/// A tree 40 levels deep with files at every level.
pub async fn deep_tree(store: &dyn WestStore, bucket: &str) {
    let p = "deep";
    let mut rel = Vec::new();
    let mut expected = Vec::new();
    for level in 0..40u64 {
        if level > 0 {
            rel.push(b'/');
        }
        rel.extend_from_slice(format!("level-{level:02}").as_bytes());
        store
            .put_entry(bucket, &west_key(p, &rel), &dir(level), GPAIR)
            .await
            .unwrap();
        expected.push(rel.clone());
        let mut f = rel.clone();
        f.extend_from_slice(b"/file");
        store
            .put_entry(
                bucket,
                &west_key(p, &f),
                &file(level * 10, 1000 + level),
                GPAIR,
            )
            .await
            .unwrap();
        expected.push(f);
    }
    let l = listing(store, bucket, p).await;
    expected.sort();
    assert_eq!(l.keys().cloned().collect::<Vec<_>>(), expected);
    let deepest = l.keys().max_by_key(|k| k.len()).unwrap();
    assert_eq!(l[deepest].logical_size, Some(390));
}

/// Files named with everything a POSIX name may hold, long names and long paths.
pub async fn awkward_names(store: &dyn WestStore, below: &dyn Below, bucket: &str) {
    let p = "names";
    let long_component = vec![b'L'; 300];
    let mut long_path = Vec::new();
    for i in 0..6 {
        if i > 0 {
            long_path.push(b'/');
        }
        long_path.extend_from_slice(&[b'a' + i as u8; 200]);
    }
    let names: Vec<Vec<u8>> = vec![
        b"latin1-\xe9t\xe9".to_vec(),
        b"new\nline".to_vec(),
        b"100% sure".to_vec(),
        b"a+b=c & d".to_vec(),
        b"  spaces  ".to_vec(),
        b"back\\slash".to_vec(),
        b"tab\there".to_vec(),
        "ünïcødé €".as_bytes().to_vec(),
        b"%2F".to_vec(),
        b".gpair-long".to_vec(),
        b"..".to_vec(),
        b"\xff\xfe".to_vec(),
        long_component.clone(),
        long_path.clone(),
    ];
    // Parents of the long path.
    let mut dirs = Vec::new();
    for (i, b) in long_path.iter().enumerate() {
        if *b == b'/' {
            dirs.push(long_path[..i].to_vec());
        }
    }
    for (i, d) in dirs.iter().enumerate() {
        store
            .put_entry(bucket, &west_key(p, d), &dir(500 + i as u64), GPAIR)
            .await
            .unwrap();
    }
    for (i, n) in names.iter().enumerate() {
        let k = west_key(p, n);
        store
            .put_entry(bucket, &k, &file(i as u64, 100 + i as u64), GPAIR)
            .await
            .unwrap();
        let e = store.head(bucket, &k, false).await.unwrap().unwrap();
        assert_eq!(e.logical_size, Some(i as u64), "{n:?}");
    }
    let l = listing(store, bucket, p).await;
    for (i, n) in names.iter().enumerate() {
        let e = l.get(n).unwrap_or_else(|| {
            panic!(
                "{n:?} not listed; listed: {:?}",
                l.keys().collect::<Vec<_>>()
            )
        });
        assert_eq!(e.logical_size, Some(i as u64), "{n:?}");
        assert_eq!(e.gpair_name.as_deref(), Some(GPAIR));
    }
    assert_eq!(l.len(), names.len() + dirs.len());
    // The long ones are under .gpair-long with their path recorded.
    assert!(west_key(p, &long_component).is_long());
    assert!(west_key(p, &long_path).is_long());
    let raw = below.all_keys(bucket).await;
    assert!(
        raw.iter().filter(|k| k.starts_with(LONG_PREFIX)).count() >= 2,
        "{raw:?}"
    );
    // Readable names stay readable.
    assert!(raw.contains(&"names/ünïcødé €".to_string()), "{raw:?}");
    assert!(raw.contains(&"names/a+b=c & d".to_string()), "{raw:?}");
    assert!(raw.contains(&"names/100%25 sure".to_string()), "{raw:?}");

    // Rename the directory that holds the long path: every long entry under it follows.
    let from = west_key(p, &dirs[0]);
    let to_rel = b"renamed".to_vec();
    let to = west_key(p, &to_rel);
    store.rename(bucket, &from, &to, true).await.unwrap();
    let l = listing(store, bucket, p).await;
    let moved = |old: &[u8]| {
        let mut n = to_rel.clone();
        n.extend_from_slice(&old[dirs[0].len()..]);
        n
    };
    assert!(!l.contains_key(&long_path), "old long path still listed");
    assert!(
        l.contains_key(&moved(&long_path)),
        "moved long path not listed: {:?}",
        l.keys().collect::<Vec<_>>()
    );
    for d in &dirs {
        assert!(!l.contains_key(d));
        assert!(l.contains_key(&moved(d)), "{:?}", moved(d));
    }
    assert_eq!(l.len(), names.len() + dirs.len());
    // ... and back: the shorter name makes the long path short again? Not all of it.
    store.rename(bucket, &to, &from, true).await.unwrap();
    let l = listing(store, bucket, p).await;
    assert!(l.contains_key(&long_path));
    for d in &dirs {
        assert!(l.contains_key(d));
    }
    assert_eq!(l.len(), names.len() + dirs.len());

    // A rename that makes plain keys too long moves them to .gpair-long.
    let short_dir = b"s".to_vec();
    store
        .put_entry(bucket, &west_key(p, &short_dir), &dir(700), GPAIR)
        .await
        .unwrap();
    let mut inner = short_dir.clone();
    inner.push(b'/');
    inner.extend_from_slice(&[b'i'; 250]);
    store
        .put_entry(bucket, &west_key(p, &inner), &file(7, 701), GPAIR)
        .await
        .unwrap();
    assert!(!west_key(p, &inner).is_long());
    let mut big = vec![b'B'; 250];
    for _ in 0..3 {
        big.push(b'/');
        big.extend_from_slice(&[b'C'; 250]);
    }
    // Parents of the destination.
    let mut acc = Vec::new();
    for (i, part) in big.split(|b| *b == b'/').enumerate() {
        if i > 0 {
            acc.push(b'/');
        }
        acc.extend_from_slice(part);
        if i < 3 {
            store
                .put_entry(bucket, &west_key(p, &acc), &dir(800 + i as u64), GPAIR)
                .await
                .unwrap();
        }
    }
    store
        .rename(bucket, &west_key(p, &short_dir), &west_key(p, &big), true)
        .await
        .unwrap();
    let mut new_inner = big.clone();
    new_inner.push(b'/');
    new_inner.extend_from_slice(&[b'i'; 250]);
    assert!(west_key(p, &new_inner).is_long());
    let e = store
        .head(bucket, &west_key(p, &new_inner), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.logical_size, Some(7));
    assert_eq!(e.gpair_name.as_deref(), Some(GPAIR));
    let l = listing(store, bucket, p).await;
    assert!(l.contains_key(&new_inner));
    assert!(l.contains_key(&big));
    assert!(!l.contains_key(&inner));
    assert!(!l.contains_key(&short_dir));
}

/// A directory with many entries moves in one call; renames are idempotent.
pub async fn directory_rename(store: &dyn WestStore, bucket: &str, count: usize) {
    let p = "ren";
    let src = b"project".to_vec();
    store
        .put_entry(bucket, &west_key(p, &src), &dir(1), GPAIR)
        .await
        .unwrap();
    let mut rels = vec![Vec::new()];
    for i in 0..count {
        let sub = format!("project/d{:02}", i % 10).into_bytes();
        if i < 10 {
            store
                .put_entry(bucket, &west_key(p, &sub), &dir(10 + i as u64), GPAIR)
                .await
                .unwrap();
            rels.push(sub[src.len()..].to_vec());
        }
        let f = format!("project/d{:02}/file-{i:04}", i % 10).into_bytes();
        store
            .put_entry(
                bucket,
                &west_key(p, &f),
                &file(i as u64, 100 + i as u64),
                GPAIR,
            )
            .await
            .unwrap();
        rels.push(f[src.len()..].to_vec());
    }
    let from = west_key(p, &src);
    let to = west_key(p, b"archive/project-2020");
    store
        .put_entry(bucket, &west_key(p, b"archive"), &dir(2), GPAIR)
        .await
        .unwrap();
    store.rename(bucket, &from, &to, true).await.unwrap();
    let l = listing(store, bucket, p).await;
    assert!(
        l.keys().all(|k| !k.starts_with(b"project")),
        "left behind: {:?}",
        l.keys()
            .filter(|k| k.starts_with(b"project"))
            .collect::<Vec<_>>()
    );
    for r in &rels {
        let mut n = b"archive/project-2020".to_vec();
        n.extend_from_slice(r);
        assert!(
            l.contains_key(&n),
            "missing {}",
            String::from_utf8_lossy(&n)
        );
    }
    assert_eq!(l.len(), rels.len() + 1);
    // Metadata moved with the entries.
    let e = &l[&b"archive/project-2020/d03/file-0013".to_vec()];
    assert_meta(e, &file(13, 113), "moved file");
    assert_eq!(e.gpair_name.as_deref(), Some(GPAIR));
    // Done again: source gone, destination there: success.
    store.rename(bucket, &from, &to, true).await.unwrap();
    // Neither there: a permanent error.
    let e = store
        .rename(
            bucket,
            &west_key(p, b"nowhere"),
            &west_key(p, b"nothing"),
            true,
        )
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    // Into itself: refused.
    let e = store
        .rename(
            bucket,
            &to,
            &west_key(p, b"archive/project-2020/inner"),
            true,
        )
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    // Onto an empty directory: replaces it (POSIX rename semantics).
    store
        .put_entry(bucket, &west_key(p, b"empty"), &dir(3), GPAIR)
        .await
        .unwrap();
    store
        .rename(bucket, &to, &west_key(p, b"empty"), true)
        .await
        .unwrap();
    let l = listing(store, bucket, p).await;
    assert!(l.contains_key(b"empty/d03/file-0013".as_slice()));
    assert_eq!(l.len(), rels.len() + 1);
}

/// File renames: plain, over an existing file, idempotent, and of a west-owned file (data
/// follows).
pub async fn file_rename(store: &dyn WestStore, below: &dyn Below, bucket: &str) {
    let p = "fren";
    let a = west_key(p, b"a.txt");
    let b = west_key(p, b"b.txt");
    let c = west_key(p, b"sub/c.txt");
    store
        .put_entry(bucket, &a, &file(10, 1), GPAIR)
        .await
        .unwrap();
    store
        .put_entry(bucket, &b, &file(20, 2), GPAIR)
        .await
        .unwrap();
    store.rename(bucket, &a, &b, false).await.unwrap(); // replaces b
    assert_eq!(store.head(bucket, &a, false).await.unwrap(), None);
    let e = store.head(bucket, &b, false).await.unwrap().unwrap();
    assert_eq!(e.logical_size, Some(10));
    store.rename(bucket, &a, &b, false).await.unwrap(); // again: done already
                                                        // West-owned data follows the rename, into a new directory.
    let data = b"west owns these bytes".to_vec();
    let m = file(data.len() as u64, 3);
    let d = west_key(p, b"owned");
    below.upload(bucket, &d, &data, &m, Some(GPAIR)).await;
    store
        .set_attr(bucket, &d, SetAttr::LocalToRemote, GPAIR)
        .await
        .unwrap();
    store.rename(bucket, &d, &c, false).await.unwrap();
    assert_eq!(below.get_bytes(bucket, &c.key).await, Some(data.clone()));
    let e = store.head(bucket, &c, false).await.unwrap().unwrap();
    assert_eq!(e.gpair_name, None);
    assert_eq!(e.data_len, data.len() as u64);
    // To a long name and back: the data and metadata follow, the path is recorded.
    let long = west_key(p, &[b'N'; 400]);
    store.rename(bucket, &c, &long, false).await.unwrap();
    assert_eq!(below.get_bytes(bucket, &long.key).await, Some(data.clone()));
    let l = listing(store, bucket, p).await;
    assert_eq!(l[&vec![b'N'; 400]].data_len, data.len() as u64);
    store.rename(bucket, &long, &c, false).await.unwrap();
    assert_eq!(below.get_bytes(bucket, &c.key).await, Some(data));
    assert_eq!(below.get_bytes(bucket, &long.key).await, None);
}

/// SetAttrObj both ways, idempotence, refusals, and metadata updates of west-owned files.
pub async fn set_attr_cycle(store: &dyn WestStore, below: &dyn Below, bucket: &str) {
    let p = "attr";
    let k = west_key(p, b"data.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let m = file(data.len() as u64, 42);
    // A placeholder has no data: ltr is refused, permanently.
    store.put_entry(bucket, &k, &m, GPAIR).await.unwrap();
    let e = store
        .set_attr(bucket, &k, SetAttr::LocalToRemote, GPAIR)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    // rtl on a placeholder: already done.
    store
        .set_attr(bucket, &k, SetAttr::RemoteToLocal, GPAIR)
        .await
        .unwrap();
    // Offload: upload with gpair-name still set, then ltr.
    below.upload(bucket, &k, &data, &m, Some(GPAIR)).await;
    let e = store.head(bucket, &k, false).await.unwrap().unwrap();
    assert_eq!(
        (e.data_len, e.gpair_name.as_deref()),
        (data.len() as u64, Some(GPAIR))
    );
    // A different gpair: refused, permanently.
    let e = store
        .set_attr(bucket, &k, SetAttr::LocalToRemote, OTHER_GPAIR)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    store
        .set_attr(bucket, &k, SetAttr::LocalToRemote, GPAIR)
        .await
        .unwrap();
    store
        .set_attr(bucket, &k, SetAttr::LocalToRemote, GPAIR)
        .await
        .unwrap(); // idempotent
    let e = store.head(bucket, &k, false).await.unwrap().unwrap();
    assert_eq!(
        (e.data_len, e.gpair_name.as_deref()),
        (data.len() as u64, None)
    );
    assert_meta(&e, &m, "after ltr");
    // chmod on the east stub: the metadata changes, west keeps the data.
    let mut m2 = m.clone();
    m2.mode = libc::S_IFREG | 0o600;
    m2.mtime_ns += 1_000;
    store.put_entry(bucket, &k, &m2, GPAIR).await.unwrap();
    let e = store.head(bucket, &k, false).await.unwrap().unwrap();
    assert_eq!(
        (e.data_len, e.gpair_name.as_deref()),
        (data.len() as u64, None)
    );
    assert_meta(&e, &m2, "after chmod of a stub");
    assert_eq!(
        below.get_bytes(bucket, &k.key).await.as_deref(),
        Some(data.as_slice())
    );
    // A different east file at that path (new inode) while west owns the old file's data: the
    // store refuses to write a placeholder over it (the sync engine decides: conflict, or move
    // the data to the trash first), and the data is intact.
    let m3 = file(7, 43);
    let k3 = west_key(p, b"other.bin");
    below
        .upload(bucket, &k3, b"old", &file(3, 44), Some(GPAIR))
        .await;
    store
        .set_attr(bucket, &k3, SetAttr::LocalToRemote, GPAIR)
        .await
        .unwrap();
    let err = store.put_entry(bucket, &k3, &m3, GPAIR).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::OwnedData, "{err}");
    assert!(err.is_permanent());
    let e = store.head(bucket, &k3, false).await.unwrap().unwrap();
    assert_eq!((e.data_len, e.gpair_name.as_deref()), (3, None));
    assert_eq!(
        below.get_bytes(bucket, &k3.key).await.as_deref(),
        Some(&b"old"[..])
    );
    // Recall: rtl releases the data and keeps the metadata.
    store
        .set_attr(bucket, &k, SetAttr::RemoteToLocal, GPAIR)
        .await
        .unwrap();
    store
        .set_attr(bucket, &k, SetAttr::RemoteToLocal, GPAIR)
        .await
        .unwrap(); // idempotent
    let e = store.head(bucket, &k, false).await.unwrap().unwrap();
    assert_eq!(
        (e.data_len, e.gpair_name.as_deref(), e.logical_size),
        (0, Some(GPAIR), Some(data.len() as u64))
    );
    assert_meta(&e, &m2, "after rtl");
    assert_eq!(
        below.get_bytes(bucket, &k.key).await.as_deref(),
        Some(&[][..])
    );
    // rtl with another gpair: refused.
    let e = store
        .set_attr(bucket, &k, SetAttr::RemoteToLocal, OTHER_GPAIR)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    // Missing object, directory: permanent.
    let e = store
        .set_attr(
            bucket,
            &west_key(p, b"missing"),
            SetAttr::RemoteToLocal,
            GPAIR,
        )
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    store
        .put_entry(bucket, &west_key(p, b"d"), &dir(50), GPAIR)
        .await
        .unwrap();
    let e = store
        .set_attr(bucket, &west_key(p, b"d"), SetAttr::LocalToRemote, GPAIR)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    // A gpair value with characters that need encoding on the wire.
    let odd = "LC_1,/east/ä b%c,LC_2,west/p q";
    let k4 = west_key(p, b"odd");
    store
        .put_entry(bucket, &k4, &file(1, 60), odd)
        .await
        .unwrap();
    assert_eq!(
        store
            .head(bucket, &k4, false)
            .await
            .unwrap()
            .unwrap()
            .gpair_name
            .as_deref(),
        Some(odd)
    );
}

/// A long key and check() on the share root for a plain key-set.
pub async fn check_stages_common(
    make: impl Fn(&str) -> std::sync::Arc<dyn WestStore>,
    endpoint: &str,
    bucket: &str,
) {
    use gpair_backend::west::CheckStage;
    let ok = make(endpoint);
    ok.check(None).await.unwrap();
    ok.check(Some(bucket)).await.unwrap();
    let f = ok.check(Some("no-such-bucket-here")).await.unwrap_err();
    assert_eq!(f.stage, CheckStage::Bucket, "{f}");
    assert!(f.message.contains("no-such-bucket-here"), "{f}");

    let closed = format!("http://127.0.0.1:{}", closed_port());
    let f = make(&closed).check(Some(bucket)).await.unwrap_err();
    assert_eq!(f.stage, CheckStage::Connect, "{f}");
    assert!(f.message.contains(&closed), "{f}");

    let f = make("http://nonexistent.invalid:9")
        .check(None)
        .await
        .unwrap_err();
    assert_eq!(f.stage, CheckStage::Dns, "{f}");
    assert!(f.message.contains("nonexistent.invalid"), "{f}");

    let f = make("ftp://127.0.0.1:21").check(None).await.unwrap_err();
    assert_eq!(f.stage, CheckStage::Protocol, "{f}");
}

/// Calls against a server that is gone fail transiently (the outbox retries them).
pub async fn unreachable_is_transient(store: &dyn WestStore, bucket: &str) {
    let k = west_key("x", b"y");
    let e = store
        .put_entry(bucket, &k, &file(1, 1), GPAIR)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    let e = store.head(bucket, &k, false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    let e = store.list(bucket, "x").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
}

/// Keys helper used by the tests.
pub fn decode_listing_key(prefix: &str, key: &str) -> Option<Vec<u8>> {
    keys::rel_path_of(prefix, key, None)
}

/// File data to west and back: a single PUT with its checksum, SetAttrObj ltr, ranged reads,
/// a multipart upload, aborting uploads, a damaged body refused (where the server checks
/// `x-amz-checksum-crc32c`; moto does not), rtl releasing the data.
pub async fn data_cycle(store: &dyn WestStore, bucket: &str, checks_checksums: bool) {
    let value = "LC_1,/e,LC_2,/b";
    let small: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let crc = crc32c::crc32c(&small);
    let key = west_key("data", b"small");
    let m = file(small.len() as u64, 41);
    store
        .put_file(bucket, &key, small.clone().into(), &m, crc, value)
        .await
        .unwrap();
    let e = store.head(bucket, &key, false).await.unwrap().unwrap();
    assert_eq!(e.data_len, small.len() as u64);
    assert_eq!(e.gpair_name.as_deref(), Some(value), "east still owns it");
    assert_eq!(e.crc32c, Some(crc));
    store
        .set_attr(bucket, &key, SetAttr::LocalToRemote, value)
        .await
        .unwrap();
    let e = store.head(bucket, &key, false).await.unwrap().unwrap();
    assert_eq!((e.gpair_name, e.data_len), (None, small.len() as u64));
    let mid = store.read_range(bucket, &key, 1000, 5000).await.unwrap();
    assert_eq!(&mid[..], &small[1000..6000]);
    // A metadata update of the file (chmod on east) keeps west's data and checksum.
    let mut m2 = m.clone();
    m2.mode = libc::S_IFREG | 0o600;
    store.put_entry(bucket, &key, &m2, value).await.unwrap();
    let e = store.head(bucket, &key, false).await.unwrap().unwrap();
    assert_eq!(
        (e.data_len, e.crc32c, e.mode),
        (small.len() as u64, Some(crc), Some(m2.mode))
    );

    // Multipart: two 5 MiB parts and a short tail.
    let big: Vec<u8> = (0..(10 << 20) + 12_345u32)
        .map(|i| (i ^ (i >> 9)) as u8)
        .collect();
    let bcrc = crc32c::crc32c(&big);
    let bkey = west_key("data", b"big");
    let bm = file(big.len() as u64, 42);
    let id = store
        .start_upload(bucket, &bkey, &bm, bcrc, value)
        .await
        .unwrap();
    let mut parts = Vec::new();
    for (i, chunk) in big.chunks(5 << 20).enumerate() {
        let n = i as i32 + 1;
        let etag = store
            .upload_part(bucket, &bkey, &id, n, chunk.to_vec().into())
            .await
            .unwrap();
        parts.push((n, etag));
    }
    store
        .finish_upload(bucket, &bkey, &id, &parts)
        .await
        .unwrap();
    let e = store.head(bucket, &bkey, false).await.unwrap().unwrap();
    assert_eq!((e.data_len, e.crc32c), (big.len() as u64, Some(bcrc)));
    let tail = store
        .read_range(bucket, &bkey, (10 << 20) - 10, 12_355)
        .await
        .unwrap();
    assert_eq!(&tail[..], &big[(10 << 20) - 10..]);
    // Reading past the end is an error, not short data.
    assert!(store
        .read_range(bucket, &bkey, big.len() as u64 - 5, 10)
        .await
        .is_err());

    // An upload left behind is found and aborted.
    let okey = west_key("data", b"orphan");
    store
        .start_upload(bucket, &okey, &file(1, 43), 0, value)
        .await
        .unwrap();
    assert_eq!(store.abort_uploads(bucket, &okey).await.unwrap(), 1);
    assert_eq!(store.abort_uploads(bucket, &okey).await.unwrap(), 0);

    // A body that does not match its checksum is refused, permanently.
    if checks_checksums {
        let err = store
            .put_file(
                bucket,
                &west_key("data", b"bad"),
                small.clone().into(),
                &m,
                crc ^ 1,
                value,
            )
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "{err}");
    }

    // rtl: west keeps a placeholder of the logical size.
    store
        .set_attr(bucket, &key, SetAttr::RemoteToLocal, value)
        .await
        .unwrap();
    let e = store.head(bucket, &key, false).await.unwrap().unwrap();
    assert_eq!(e.gpair_name.as_deref(), Some(value));
    assert_eq!(e.data_len, 0);
    assert_eq!(e.logical_size, Some(small.len() as u64));
}
