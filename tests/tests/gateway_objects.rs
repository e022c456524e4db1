//! s3fs-gateway end to end: buckets and objects (docs/gateway.md "Operations", "Layout on
//! disk", "Directories", "Writes are atomic and durable").
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, MetadataDirective, ObjectIdentifier};
use gpair_tests::*;

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, data: &[u8]) -> String {
    let out = c
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
    out.e_tag().unwrap().to_string()
}

async fn get(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {bucket}/{key}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn list_all(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = c
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
        if out.is_truncated() == Some(true) {
            token = Some(out.next_continuation_token().unwrap().to_string());
        } else {
            return keys;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn buckets_create_head_list_delete_location() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);

    c.create_bucket().bucket("alpha").send().await.unwrap();
    c.create_bucket().bucket("beta-2").send().await.unwrap();
    assert!(
        gw.root.join("alpha").is_dir(),
        "bucket is a directory under the root"
    );
    assert!(gw.root.join("beta-2").is_dir());

    c.head_bucket().bucket("alpha").send().await.unwrap();
    let (status, _) = expect_err(c.head_bucket().bucket("nosuchbucket").send().await);
    assert_eq!(status, 404);
    let (status, code) = expect_err(c.list_objects_v2().bucket("nosuchbucket").send().await);
    assert_eq!((status, code.as_str()), (404, "NoSuchBucket"));

    let out = c.list_buckets().send().await.unwrap();
    let mut names: Vec<String> = out
        .buckets()
        .iter()
        .map(|b| b.name().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["alpha".to_string(), "beta-2".to_string()],
        ".gpair-gateway must not be listed"
    );

    let loc = c
        .get_bucket_location()
        .bucket("alpha")
        .send()
        .await
        .unwrap();
    // us-east-1 is reported as an empty LocationConstraint by S3; any value the gateway
    // reports must be us-east-1 or empty.
    let lc = loc
        .location_constraint()
        .map(|l| l.as_str().to_string())
        .unwrap_or_default();
    assert!(
        lc.is_empty() || lc == "us-east-1",
        "location constraint {lc:?}"
    );

    // Non-empty bucket cannot be deleted.
    put(&c, "alpha", "d/x", b"hello").await;
    let (status, code) = expect_err(c.delete_bucket().bucket("alpha").send().await);
    assert_eq!((status, code.as_str()), (409, "BucketNotEmpty"));
    c.head_bucket().bucket("alpha").send().await.unwrap();
    assert!(gw.root.join("alpha/d/x").is_file());

    // Emptied (only an implicit directory was left, and it goes with its last key).
    c.delete_object()
        .bucket("alpha")
        .key("d/x")
        .send()
        .await
        .unwrap();
    c.delete_bucket().bucket("alpha").send().await.unwrap();
    assert!(!gw.root.join("alpha").exists(), "bucket directory removed");
    let (status, _) = expect_err(c.head_bucket().bucket("alpha").send().await);
    assert_eq!(status, 404);

    c.delete_bucket().bucket("beta-2").send().await.unwrap();
    let out = c.list_buckets().send().await.unwrap();
    assert!(out.buckets().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn object_put_get_head_delete_are_real_files() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();

    let data = test_bytes(300_001, 1);
    let etag = put(&c, "bkt", "dir1/sub/file.bin", &data).await;
    assert_eq!(etag, format!("\"{}\"", md5_hex(&data)));

    // The object is a real file with the same bytes.
    let path = gw.root.join("bkt/dir1/sub/file.bin");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert!(gw.root.join("bkt/dir1/sub").is_dir());

    assert_eq!(get(&c, "bkt", "dir1/sub/file.bin").await, data);
    let head = c
        .head_object()
        .bucket("bkt")
        .key("dir1/sub/file.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(data.len() as i64));
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    assert!(head.last_modified().is_some());

    // Unicode and spaces map one-to-one to file names.
    let k2 = "dir1/é ü/日本 語.txt";
    put(&c, "bkt", k2, b"unicode").await;
    assert_eq!(
        std::fs::read(gw.root.join("bkt").join(k2)).unwrap(),
        b"unicode"
    );
    assert_eq!(get(&c, "bkt", k2).await, b"unicode");

    // Empty object.
    put(&c, "bkt", "empty", b"").await;
    assert_eq!(
        std::fs::metadata(gw.root.join("bkt/empty")).unwrap().len(),
        0
    );
    assert_eq!(get(&c, "bkt", "empty").await, b"");

    // Overwrite replaces the bytes.
    let data2 = test_bytes(1000, 2);
    put(&c, "bkt", "dir1/sub/file.bin", &data2).await;
    assert_eq!(std::fs::read(&path).unwrap(), data2);
    assert_eq!(get(&c, "bkt", "dir1/sub/file.bin").await, data2);

    // Missing key.
    let (status, code) = expect_err(c.get_object().bucket("bkt").key("nope").send().await);
    assert_eq!((status, code.as_str()), (404, "NoSuchKey"));
    let (status, _) = expect_err(c.head_object().bucket("bkt").key("nope").send().await);
    assert_eq!(status, 404);

    // Delete removes the file and the implicit parents it leaves empty.
    c.delete_object()
        .bucket("bkt")
        .key("dir1/sub/file.bin")
        .send()
        .await
        .unwrap();
    assert!(!path.exists());
    assert!(
        !gw.root.join("bkt/dir1/sub").exists(),
        "empty implicit directory removed"
    );
    assert!(gw.root.join("bkt/dir1").is_dir(), "dir1 still holds a key");
    let (status, code) = expect_err(
        c.get_object()
            .bucket("bkt")
            .key("dir1/sub/file.bin")
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (404, "NoSuchKey"));
    // Deleting a missing key is a success in S3.
    c.delete_object()
        .bucket("bkt")
        .key("dir1/sub/file.bin")
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket("bkt")
        .key(k2)
        .send()
        .await
        .unwrap();
    assert!(!gw.root.join("bkt/dir1").exists());

    // Staging leaves nothing behind.
    assert!(files_in(&gw.root.join(".gpair-gateway/tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn get_with_range() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let data = test_bytes(1000, 3);
    put(&c, "bkt", "r", &data).await;

    let cases: &[(&str, std::ops::Range<usize>)] = &[
        ("bytes=0-9", 0..10),
        ("bytes=100-199", 100..200),
        ("bytes=-10", 990..1000),
        ("bytes=990-", 990..1000),
        ("bytes=0-", 0..1000),
        ("bytes=995-5000", 995..1000),
        ("bytes=999-999", 999..1000),
    ];
    for (range, want) in cases {
        // raw request: exact status and headers
        let r = gw.get_raw("bkt", "r", &[("range", range)]);
        assert_eq!(r.status, 206, "{range}: {}", r.body_str());
        assert_eq!(r.body, &data[want.clone()], "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {}-{}/1000", want.start, want.end - 1).as_str()),
            "{range}"
        );
        assert_eq!(
            r.header("content-length"),
            Some(want.len().to_string().as_str())
        );
        // and through the SDK
        let out = c
            .get_object()
            .bucket("bkt")
            .key("r")
            .range(*range)
            .send()
            .await
            .unwrap();
        let body = out.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], &data[want.clone()], "{range} (sdk)");
    }

    for range in ["bytes=1000-", "bytes=5000-6000"] {
        let r = gw.get_raw("bkt", "r", &[("range", range)]);
        assert_eq!(r.status, 416, "{range}: {}", r.body_str());
        assert_eq!(r.s3_code().as_deref(), Some("InvalidRange"), "{range}");
        let (status, code) = expect_err(
            c.get_object()
                .bucket("bkt")
                .key("r")
                .range(range)
                .send()
                .await,
        );
        assert_eq!((status, code.as_str()), (416, "InvalidRange"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_objects_batch() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    for k in ["k1", "k2", "d/k3", "d/k4", "k5"] {
        put(&c, "bkt", k, k.as_bytes()).await;
    }
    let ids: Vec<ObjectIdentifier> = ["k1", "d/k3", "k5", "never-existed"]
        .iter()
        .map(|k| ObjectIdentifier::builder().key(*k).build().unwrap())
        .collect();
    let out = c
        .delete_objects()
        .bucket("bkt")
        .delete(Delete::builder().set_objects(Some(ids)).build().unwrap())
        .send()
        .await
        .unwrap();
    assert!(out.errors().is_empty(), "errors: {:?}", out.errors());
    let mut deleted: Vec<String> = out
        .deleted()
        .iter()
        .map(|d| d.key().unwrap().to_string())
        .collect();
    deleted.sort();
    assert_eq!(deleted, vec!["d/k3", "k1", "k5", "never-existed"]);
    assert_eq!(
        list_all(&c, "bkt").await,
        vec!["d/k4".to_string(), "k2".to_string()]
    );
    assert!(!gw.root.join("bkt/k1").exists());
    assert!(!gw.root.join("bkt/d/k3").exists());
    assert!(gw.root.join("bkt/d/k4").exists());

    // Quiet mode reports nothing for successes.
    let out = c
        .delete_objects()
        .bucket("bkt")
        .delete(
            Delete::builder()
                .objects(ObjectIdentifier::builder().key("k2").build().unwrap())
                .quiet(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(out.deleted().is_empty());
    assert_eq!(list_all(&c, "bkt").await, vec!["d/k4".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_object_copy_and_replace() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    c.create_bucket().bucket("bkt2").send().await.unwrap();
    let data = test_bytes(70_000, 4);
    c.put_object()
        .bucket("bkt")
        .key("src")
        .body(ByteStream::from(data.clone()))
        .content_type("text/x-src")
        .metadata("color", "blue")
        .metadata("shape", "round")
        .send()
        .await
        .unwrap();

    // COPY (the default) keeps metadata and content type.
    let out = c
        .copy_object()
        .bucket("bkt")
        .key("dst/copy")
        .copy_source("bkt/src")
        .metadata_directive(MetadataDirective::Copy)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.copy_object_result().unwrap().e_tag(),
        Some(format!("\"{}\"", md5_hex(&data)).as_str())
    );
    assert_eq!(std::fs::read(gw.root.join("bkt/dst/copy")).unwrap(), data);
    let h = c
        .head_object()
        .bucket("bkt")
        .key("dst/copy")
        .send()
        .await
        .unwrap();
    let md = h.metadata().unwrap();
    assert_eq!(md.get("color").map(String::as_str), Some("blue"));
    assert_eq!(md.get("shape").map(String::as_str), Some("round"));
    assert_eq!(md.len(), 2, "{md:?}");
    assert_eq!(h.content_type(), Some("text/x-src"));

    // REPLACE takes the request's metadata only.
    c.copy_object()
        .bucket("bkt2")
        .key("replaced")
        .copy_source("bkt/src")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("size", "large")
        .content_type("application/x-new")
        .send()
        .await
        .unwrap();
    assert_eq!(std::fs::read(gw.root.join("bkt2/replaced")).unwrap(), data);
    let h = c
        .head_object()
        .bucket("bkt2")
        .key("replaced")
        .send()
        .await
        .unwrap();
    let md = h.metadata().unwrap();
    assert_eq!(md.get("size").map(String::as_str), Some("large"));
    assert!(!md.contains_key("color"), "{md:?}");
    assert_eq!(h.content_type(), Some("application/x-new"));
    assert_eq!(get(&c, "bkt2", "replaced").await, data);

    // Copy onto itself needs REPLACE.
    let (status, _) = expect_err(
        c.copy_object()
            .bucket("bkt")
            .key("src")
            .copy_source("bkt/src")
            .send()
            .await,
    );
    assert_eq!(status, 400);
    c.copy_object()
        .bucket("bkt")
        .key("src")
        .copy_source("bkt/src")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("color", "green")
        .send()
        .await
        .unwrap();
    let h = c
        .head_object()
        .bucket("bkt")
        .key("src")
        .send()
        .await
        .unwrap();
    assert_eq!(
        h.metadata().unwrap().get("color").map(String::as_str),
        Some("green")
    );
    assert_eq!(get(&c, "bkt", "src").await, data);

    // Missing source.
    let (status, code) = expect_err(
        c.copy_object()
            .bucket("bkt")
            .key("x")
            .copy_source("bkt/missing")
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (404, "NoSuchKey"));
}

/// A reader looping over GETs during repeated overwrites only ever sees complete versions.
#[tokio::test(flavor = "multi_thread")]
async fn put_is_atomic_for_concurrent_readers() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let versions: Vec<Vec<u8>> = (0..4).map(|i| test_bytes(4 << 20, 100 + i)).collect();
    let md5s: HashSet<String> = versions.iter().map(|v| md5_hex(v)).collect();
    put(&c, "bkt", "big", &versions[0]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (stop, reads, md5s) = (stop.clone(), reads.clone(), md5s.clone());
        let addr = gw.addr;
        let key = gw.backend.clone();
        // Raw GETs on blocking threads: each sees the whole body or fails loudly.
        readers.push(std::thread::spawn(move || {
            let mut seen = HashSet::new();
            while !stop.load(Ordering::Relaxed) || reads.load(Ordering::Relaxed) < 4 {
                let h = sign_headers(
                    addr,
                    &key,
                    "GET",
                    "/bkt/big",
                    &[],
                    b"",
                    std::time::SystemTime::now(),
                );
                let r = raw_request(addr, "GET", "/bkt/big", &h, b"");
                assert_eq!(r.status, 200, "{}", r.body_str());
                assert_eq!(r.body.len(), 4 << 20, "partial object seen");
                let m = md5_hex(&r.body);
                assert!(
                    md5s.contains(&m),
                    "GET returned bytes of no version (torn write)"
                );
                // ETag matches the bytes it came with
                assert_eq!(
                    r.header("etag"),
                    Some(format!("\"{m}\"").as_str()),
                    "ETag/body mismatch"
                );
                seen.insert(m);
                reads.fetch_add(1, Ordering::Relaxed);
            }
            seen
        }));
    }
    for round in 0..12 {
        let v = &versions[(round + 1) % versions.len()];
        put(&c, "bkt", "big", v).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = HashSet::new();
    for r in readers {
        seen.extend(r.join().unwrap());
    }
    assert!(!seen.is_empty());
    assert!(reads.load(Ordering::Relaxed) >= 4);
    let last = &versions[12 % versions.len()];
    assert_eq!(get(&c, "bkt", "big").await, *last);
    assert_eq!(std::fs::read(gw.root.join("bkt/big")).unwrap(), *last);
    assert!(
        files_in(&gw.root.join(".gpair-gateway/tmp")).is_empty(),
        "staging files left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_markers_are_directories() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();

    put(&c, "bkt", "dir/", b"").await;
    assert!(
        gw.root.join("bkt/dir").is_dir(),
        "dir/ is a directory on disk"
    );
    assert_eq!(list_all(&c, "bkt").await, vec!["dir/".to_string()]);
    let h = c
        .head_object()
        .bucket("bkt")
        .key("dir/")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_length(), Some(0));

    // A marker survives the deletion of its children.
    put(&c, "bkt", "dir/child", b"c").await;
    assert_eq!(
        list_all(&c, "bkt").await,
        vec!["dir/".to_string(), "dir/child".to_string()]
    );
    c.delete_object()
        .bucket("bkt")
        .key("dir/child")
        .send()
        .await
        .unwrap();
    assert!(gw.root.join("bkt/dir").is_dir());
    assert_eq!(list_all(&c, "bkt").await, vec!["dir/".to_string()]);

    // Implicit parents are not objects.
    put(&c, "bkt", "p/q/r", b"r").await;
    assert_eq!(
        list_all(&c, "bkt").await,
        vec!["dir/".to_string(), "p/q/r".to_string()]
    );
    let (status, _) = expect_err(c.head_object().bucket("bkt").key("p/").send().await);
    assert_eq!(status, 404, "implicit directory is not an object");

    // Deleting a non-empty marker: it stops being listed, the directory stays.
    put(&c, "bkt", "dir/child2", b"c").await;
    c.delete_object()
        .bucket("bkt")
        .key("dir/")
        .send()
        .await
        .unwrap();
    assert!(gw.root.join("bkt/dir/child2").is_file());
    assert_eq!(
        list_all(&c, "bkt").await,
        vec!["dir/child2".to_string(), "p/q/r".to_string()]
    );
    // ...and now it is implicit, so it goes with its last key.
    c.delete_object()
        .bucket("bkt")
        .key("dir/child2")
        .send()
        .await
        .unwrap();
    assert!(!gw.root.join("bkt/dir").exists());

    // Deleting an empty marker removes the directory.
    put(&c, "bkt", "e/", b"").await;
    assert!(gw.root.join("bkt/e").is_dir());
    c.delete_object()
        .bucket("bkt")
        .key("e/")
        .send()
        .await
        .unwrap();
    assert!(!gw.root.join("bkt/e").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn key_and_prefix_cannot_share_a_name() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    put(&c, "bkt", "a/b", b"x").await;
    let r = gw.put_raw("bkt", "a", &[], b"file over dir");
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (409, Some("KeyConflict")),
        "{}",
        r.body_str()
    );
    assert!(gw.root.join("bkt/a").is_dir());

    put(&c, "bkt", "f", b"file").await;
    let r = gw.put_raw("bkt", "f/g", &[], b"dir over file");
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (409, Some("KeyConflict")),
        "{}",
        r.body_str()
    );
    assert_eq!(std::fs::read(gw.root.join("bkt/f")).unwrap(), b"file");
    assert_eq!(
        list_all(&c, "bkt").await,
        vec!["a/b".to_string(), "f".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fsync_false_also_works() {
    let gw = Gateway::start_with(GatewayOptions {
        no_fsync: true,
        ..Default::default()
    });
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("nfs").send().await.unwrap();
    let data = test_bytes(2 << 20, 9);
    let etag = put(&c, "nfs", "x/y", &data).await;
    assert_eq!(etag, format!("\"{}\"", md5_hex(&data)));
    assert_eq!(get(&c, "nfs", "x/y").await, data);
    assert_eq!(std::fs::read(gw.root.join("nfs/x/y")).unwrap(), data);
    c.delete_object()
        .bucket("nfs")
        .key("x/y")
        .send()
        .await
        .unwrap();
    assert!(!gw.root.join("nfs/x/y").exists());
}
