//! s3fs-gateway end to end: POSIX metadata on files, and the gpair extensions
//! (docs/gateway.md "Object metadata", "gpair extensions": SetAttrObj, placeholders, native
//! rename, usage).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use aws_sdk_s3::primitives::ByteStream;
use gpair_tests::*;

const V: &str = "LC_111,/share/proj,LC_222,west-bucket/proj";
const V2: &str = "LC_333,/other/share,LC_222,west-bucket/other";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn setattr(
    gw: &Gateway,
    key: &Key,
    bucket: &str,
    obj: &str,
    attr: Option<&str>,
    value: Option<&str>,
) -> RawResponse {
    let mut headers = Vec::new();
    if let Some(a) = attr {
        headers.push(("x-gpair-attr-key", a));
    }
    if let Some(v) = value {
        headers.push(("x-gpair-attr-value", v));
    }
    gw.signed(
        key,
        "POST",
        &format!("/{bucket}/{}?gpair-setattr", encode_key(obj)),
        &headers,
        b"",
    )
}

fn rename(
    gw: &Gateway,
    key: &Key,
    bucket: &str,
    from: &str,
    to_encoded: &str,
    replace: bool,
) -> RawResponse {
    let mut headers = vec![("x-gpair-rename-to", to_encoded)];
    if replace {
        headers.push(("x-gpair-rename-replace", "true"));
    }
    gw.signed(
        key,
        "POST",
        &format!("/{bucket}/{}?gpair-rename", encode_key(from)),
        &headers,
        b"",
    )
}

async fn list_keys(c: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = c
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
        if out.is_truncated() == Some(true) {
            token = out.next_continuation_token().map(str::to_string);
        } else {
            return keys;
        }
    }
}

// ------------------------------------------------------------------------------------------
// Metadata
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn user_metadata_round_trips() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    c.put_object()
        .bucket("bkt")
        .key("m")
        .body(ByteStream::from_static(b"data"))
        .metadata("alpha", "1")
        .metadata("beta-two", "some value with spaces")
        .metadata("gpair-ino", "123456")
        .metadata("gpair-checksum", "sha256:abcdef")
        .content_type("text/plain")
        .cache_control("no-cache")
        .content_disposition("attachment")
        .send()
        .await
        .unwrap();
    let h = c.head_object().bucket("bkt").key("m").send().await.unwrap();
    let md = h.metadata().unwrap();
    assert_eq!(md.len(), 4, "{md:?}");
    assert_eq!(md.get("alpha").map(String::as_str), Some("1"));
    assert_eq!(
        md.get("beta-two").map(String::as_str),
        Some("some value with spaces")
    );
    assert_eq!(md.get("gpair-ino").map(String::as_str), Some("123456"));
    assert_eq!(
        md.get("gpair-checksum").map(String::as_str),
        Some("sha256:abcdef")
    );
    assert_eq!(h.content_type(), Some("text/plain"));
    assert_eq!(h.cache_control(), Some("no-cache"));
    assert_eq!(h.content_disposition(), Some("attachment"));
    let g = c.get_object().bucket("bkt").key("m").send().await.unwrap();
    assert_eq!(g.metadata().unwrap(), md);

    // Metadata survives a restart (it lives in the file's xattr).
    let mut gw = gw;
    gw.restart();
    let c = gw.client(&gw.backend);
    let h2 = c.head_object().bucket("bkt").key("m").send().await.unwrap();
    assert_eq!(h2.metadata().unwrap(), md);
    assert_eq!(h2.e_tag(), h.e_tag());
    assert_eq!(h2.last_modified(), h.last_modified());
}

#[tokio::test(flavor = "multi_thread")]
async fn posix_headers_are_applied_to_files_and_dirs() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();

    // s3fs-fuse sends the full st_mode in decimal: 0o100640 = 33184.
    c.put_object()
        .bucket("bkt")
        .key("f/file")
        .body(ByteStream::from_static(b"posix"))
        .metadata("mode", (0o100640u32).to_string())
        .metadata("uid", "1234")
        .metadata("gid", "5678")
        .metadata("mtime", "1600000000.5")
        .send()
        .await
        .unwrap();
    let m = std::fs::metadata(gw.root.join("bkt/f/file")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o640, "mode applied");
    assert_eq!(m.mtime(), 1_600_000_000, "mtime applied");
    assert!(
        (m.mtime_nsec() - 500_000_000).abs() < 1_000_000,
        "fractional mtime: {}",
        m.mtime_nsec()
    );
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "uid/gid applied");
    } else {
        eprintln!("not root: uid/gid checks skipped");
    }
    // ...and still returned as user metadata.
    let h = c
        .head_object()
        .bucket("bkt")
        .key("f/file")
        .send()
        .await
        .unwrap();
    let md = h.metadata().unwrap();
    assert_eq!(md.get("mode").map(String::as_str), Some("33184"));
    assert_eq!(md.get("uid").map(String::as_str), Some("1234"));
    assert_eq!(md.get("gid").map(String::as_str), Some("5678"));
    assert_eq!(md.get("mtime").map(String::as_str), Some("1600000000.5"));

    // Setuid/sticky bits are permission bits too; file-type bits are ignored.
    c.put_object()
        .bucket("bkt")
        .key("f/exec")
        .body(ByteStream::from_static(b"#!"))
        .metadata("mode", (0o104755u32).to_string())
        .send()
        .await
        .unwrap();
    let m = std::fs::metadata(gw.root.join("bkt/f/exec")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
    assert!(m.is_file());

    // A directory marker takes them too: 0o40750 = 16872.
    c.put_object()
        .bucket("bkt")
        .key("d/")
        .body(ByteStream::from_static(b""))
        .metadata("mode", (0o40750u32).to_string())
        .metadata("uid", "4321")
        .metadata("gid", "8765")
        .metadata("mtime", "1500000000")
        .send()
        .await
        .unwrap();
    let m = std::fs::metadata(gw.root.join("bkt/d")).unwrap();
    assert!(m.is_dir());
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o750,
        "directory mode applied"
    );
    assert_eq!(m.mtime(), 1_500_000_000, "directory mtime applied");
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (4321, 8765));
    }
    let h = c
        .head_object()
        .bucket("bkt")
        .key("d/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        h.metadata().unwrap().get("mode").map(String::as_str),
        Some("16872")
    );
}

// ------------------------------------------------------------------------------------------
// SetAttrObj and placeholders
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn setattr_ltr_and_rtl_lifecycle() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let data = test_bytes(123_457, 1);
    let key = "proj/dir/file.dat";

    // Offload upload: data plus x-gpair-name (west is not the owner yet).
    let r = gw.put_raw(
        "bkt",
        key,
        &[("x-gpair-name", V), ("x-amz-meta-color", "blue")],
        &data,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let h = gw.head_raw("bkt", key);
    assert_eq!(h.header("x-gpair-name"), Some(V));
    let g = gw.get_raw("bkt", key, &[]);
    assert_eq!(
        g.header("x-gpair-name"),
        Some(V),
        "GET carries x-gpair-name too"
    );
    assert_eq!(g.body, data);
    let usage0 = gw.usage("bkt");
    assert_eq!(usage0["bytes"], serde_json::json!(data.len()));
    assert_eq!(usage0["objects"], serde_json::json!(1));

    // ltr: west owns the data.
    let r = setattr(
        &gw,
        &gw.backend,
        "bkt",
        key,
        Some("ltr_local_to_remote"),
        Some(V),
    );
    assert_eq!(r.status, 200, "ltr: {}", r.body_str());
    assert!(r.body.is_empty(), "SetAttrObj answers an empty body");
    let h = gw.head_raw("bkt", key);
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("x-gpair-name"),
        None,
        "gpair-name must be NULL after ltr"
    );
    assert_eq!(
        h.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    let g = gw.get_raw("bkt", key, &[]);
    assert_eq!(g.body, data);
    assert_eq!(g.header("x-gpair-name"), None);
    // idempotent
    let r = setattr(
        &gw,
        &gw.backend,
        "bkt",
        key,
        Some("ltr_local_to_remote"),
        Some(V),
    );
    assert_eq!(r.status, 200, "ltr again: {}", r.body_str());
    assert_eq!(gw.get_raw("bkt", key, &[]).body, data);
    assert_eq!(gw.usage("bkt"), usage0, "ltr does not change usage");

    // rtl: data back on east; the object becomes a placeholder.
    let r = setattr(
        &gw,
        &gw.backend,
        "bkt",
        key,
        Some("rtl_remote_to_local"),
        Some(V),
    );
    assert_eq!(r.status, 200, "rtl: {}", r.body_str());
    let check_placeholder = |gw: &Gateway| {
        let h = gw.head_raw("bkt", key);
        assert_eq!(h.status, 200);
        assert_eq!(
            h.header("content-length"),
            Some("0"),
            "placeholder HEAD length"
        );
        assert_eq!(h.header("x-gpair-name"), Some(V));
        assert_eq!(
            h.header("x-amz-meta-gpair-size"),
            Some(data.len().to_string().as_str())
        );
        assert_eq!(
            h.header("x-amz-meta-color"),
            Some("blue"),
            "user metadata kept"
        );
        let g = gw.get_raw("bkt", key, &[]);
        assert_eq!(g.status, 200);
        assert!(
            g.body.is_empty(),
            "placeholder GET returned {} bytes",
            g.body.len()
        );
        assert_eq!(g.header("x-gpair-name"), Some(V));
        let g = gw.get_raw("bkt", key, &[("range", "bytes=0-9")]);
        assert_eq!(
            (g.status, g.s3_code().as_deref()),
            (416, Some("InvalidRange")),
            "ranged GET of a placeholder"
        );
        let m = std::fs::metadata(gw.root.join("bkt").join(key)).unwrap();
        assert_eq!(
            m.len(),
            data.len() as u64,
            "on-disk size is the logical size"
        );
        // No data extents; st_blocks may only hold an out-of-inode xattr block (ext4 puts
        // the metadata record there when it does not fit in the inode).
        assert!(
            has_no_data(&gw.root.join("bkt").join(key)),
            "placeholder has data blocks"
        );
        assert!(m.blocks() <= 8, "placeholder st_blocks {}", m.blocks());
    };
    check_placeholder(&gw);
    let u = gw.usage("bkt");
    assert_eq!(u["bytes"], serde_json::json!(0), "rtl frees the bytes: {u}");
    assert_eq!(
        u["objects"],
        serde_json::json!(0),
        "placeholders are not counted: {u}"
    );

    // rtl again: idempotent.
    let r = setattr(
        &gw,
        &gw.backend,
        "bkt",
        key,
        Some("rtl_remote_to_local"),
        Some(V),
    );
    assert_eq!(r.status, 200, "rtl again: {}", r.body_str());
    check_placeholder(&gw);

    // ltr on a placeholder: no data to own.
    let r = setattr(
        &gw,
        &gw.backend,
        "bkt",
        key,
        Some("ltr_local_to_remote"),
        Some(V),
    );
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (409, Some("InvalidObjectState")),
        "{}",
        r.body_str()
    );
    check_placeholder(&gw);

    // CopyObject from a placeholder.
    let r = gw.signed(
        &gw.backend,
        "PUT",
        "/bkt/copy-of-placeholder",
        &[("x-amz-copy-source", &format!("/bkt/{}", encode_key(key)))],
        b"",
    );
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (409, Some("InvalidObjectState")),
        "{}",
        r.body_str()
    );
    assert_eq!(gw.head_raw("bkt", "copy-of-placeholder").status, 404);

    // The state survives a restart, and so does the usage.
    let mut gw = gw;
    gw.restart();
    check_placeholder(&gw);
    assert_eq!(gw.usage("bkt"), u);
}

#[tokio::test(flavor = "multi_thread")]
async fn setattr_errors() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let r = gw.put_raw("bkt", "marked", &[("x-gpair-name", V)], b"payload");
    assert_eq!(r.status, 200);

    // A different gpair value on an object marked V.
    let r = setattr(
        &gw,
        &gw.backend,
        "bkt",
        "marked",
        Some("ltr_local_to_remote"),
        Some(V2),
    );
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (409, Some("GpairMismatch")),
        "{}",
        r.body_str()
    );
    assert_eq!(
        gw.head_raw("bkt", "marked").header("x-gpair-name"),
        Some(V),
        "unchanged"
    );

    for (attr, value) in [
        (Some("frobnicate"), Some(V)),
        (Some("ltr_local_to_remote"), None),
        (Some("rtl_remote_to_local"), None),
        (Some("ltr_local_to_remote"), Some("")),
        (None, Some(V)),
    ] {
        let r = setattr(&gw, &gw.backend, "bkt", "marked", attr, value);
        assert_eq!(
            (r.status, r.s3_code().as_deref()),
            (400, Some("InvalidArgument")),
            "attr {attr:?} value {value:?}: {}",
            r.body_str()
        );
    }
    let h = gw.head_raw("bkt", "marked");
    assert_eq!(h.header("x-gpair-name"), Some(V));
    assert_eq!(h.header("content-length"), Some("7"));

    // Reader keys may not.
    for attr in ["ltr_local_to_remote", "rtl_remote_to_local"] {
        let r = setattr(&gw, &gw.reader, "bkt", "marked", Some(attr), Some(V));
        assert_eq!(
            (r.status, r.s3_code().as_deref()),
            (403, Some("AccessDenied")),
            "{}",
            r.body_str()
        );
    }
    assert_eq!(gw.get_raw("bkt", "marked", &[]).body, b"payload");
    assert_eq!(gw.head_raw("bkt", "marked").header("x-gpair-name"), Some(V));
}

#[tokio::test(flavor = "multi_thread")]
async fn rtl_frees_quota_usage_by_the_object_size() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let a = test_bytes(10_000, 1);
    let b = test_bytes(25_000, 2);
    assert_eq!(gw.put_raw("bkt", "a", &[], &a).status, 200);
    assert_eq!(gw.put_raw("bkt", "d/b", &[], &b).status, 200);
    let before = gw.usage("bkt");
    assert_eq!(before["bucket"], serde_json::json!("bkt"));
    assert_eq!(before["bytes"], serde_json::json!(35_000));
    assert_eq!(before["objects"], serde_json::json!(2));
    assert_eq!(before["max_bytes"], serde_json::Value::Null);
    assert_eq!(before["max_objects"], serde_json::Value::Null);
    let r = setattr(
        &gw,
        &gw.backend,
        "bkt",
        "d/b",
        Some("rtl_remote_to_local"),
        Some(V),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let after = gw.usage("bkt");
    assert_eq!(after["bytes"], serde_json::json!(10_000), "{after}");
    assert_eq!(after["objects"], serde_json::json!(1), "{after}");
    // The reader may read the usage too.
    let r = gw.signed(&gw.reader, "GET", "/bkt?gpair-usage", &[], b"");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, after);
}

/// The backend creates a placeholder in one request: empty body, x-gpair-name and
/// x-amz-meta-gpair-size.
#[tokio::test(flavor = "multi_thread")]
async fn placeholder_created_by_one_put() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let r = gw.put_raw(
        "bkt",
        "ph/file",
        &[
            ("x-gpair-name", V),
            ("x-amz-meta-gpair-size", "1048576"),
            ("x-amz-meta-mode", "33188"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let h = gw.head_raw("bkt", "ph/file");
    assert_eq!(h.header("content-length"), Some("0"));
    assert_eq!(h.header("x-gpair-name"), Some(V));
    assert_eq!(h.header("x-amz-meta-gpair-size"), Some("1048576"));
    let g = gw.get_raw("bkt", "ph/file", &[]);
    assert_eq!(g.status, 200);
    assert!(g.body.is_empty());
    let g = gw.get_raw("bkt", "ph/file", &[("range", "bytes=0-0")]);
    assert_eq!(g.status, 416);
    let m = std::fs::metadata(gw.root.join("bkt/ph/file")).unwrap();
    assert_eq!(m.len(), 1_048_576, "ls -l shows the size east has");
    assert!(
        has_no_data(&gw.root.join("bkt/ph/file")),
        "placeholder has data blocks"
    );
    assert!(m.blocks() <= 8, "placeholder st_blocks {}", m.blocks());
    assert_eq!(m.permissions().mode() & 0o7777, 0o644);
    let u = gw.usage("bkt");
    assert_eq!(
        (u["bytes"].as_u64(), u["objects"].as_u64()),
        (Some(0), Some(0)),
        "{u}"
    );
}

// ------------------------------------------------------------------------------------------
// Native rename
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn rename_object_keeps_bytes_metadata_and_gpair_name() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let data = test_bytes(40_000, 3);
    let r = gw.put_raw(
        "bkt",
        "src/a.txt",
        &[
            ("x-gpair-name", V),
            ("x-amz-meta-color", "teal"),
            ("content-type", "text/x-a"),
        ],
        &data,
    );
    assert_eq!(r.status, 200);
    let etag = r.header("etag").unwrap().to_string();
    let usage = gw.usage("bkt");
    let ino = std::fs::metadata(gw.root.join("bkt/src/a.txt"))
        .unwrap()
        .ino();

    let dest = "dst/sub/é b.txt";
    let r = rename(
        &gw,
        &gw.backend,
        "bkt",
        "src/a.txt",
        &encode_key(dest),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(gw.head_raw("bkt", "src/a.txt").status, 404, "source gone");
    assert!(
        !gw.root.join("bkt/src").exists(),
        "emptied implicit parent removed"
    );
    let g = gw.get_raw("bkt", dest, &[]);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, data);
    assert_eq!(g.header("etag"), Some(etag.as_str()));
    assert_eq!(g.header("x-gpair-name"), Some(V));
    assert_eq!(g.header("x-amz-meta-color"), Some("teal"));
    assert_eq!(g.header("content-type"), Some("text/x-a"));
    let p = gw.root.join("bkt").join(dest);
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(
        std::fs::metadata(&p).unwrap().ino(),
        ino,
        "moved with rename(2), not copied"
    );
    assert_eq!(gw.usage("bkt"), usage);

    // Missing source.
    let r = rename(&gw, &gw.backend, "bkt", "src/a.txt", "x", false);
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (404, Some("NoSuchKey")),
        "{}",
        r.body_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_conflicts_replace_access_and_bad_keys() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    assert_eq!(gw.put_raw("bkt", "one", &[], b"one").status, 200);
    assert_eq!(gw.put_raw("bkt", "two", &[], b"two").status, 200);

    let r = rename(&gw, &gw.backend, "bkt", "one", "two", false);
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (409, Some("KeyConflict")),
        "{}",
        r.body_str()
    );
    assert_eq!(gw.get_raw("bkt", "one", &[]).body, b"one");
    assert_eq!(gw.get_raw("bkt", "two", &[]).body, b"two");

    let r = rename(&gw, &gw.backend, "bkt", "one", "two", true);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(gw.head_raw("bkt", "one").status, 404);
    assert_eq!(gw.get_raw("bkt", "two", &[]).body, b"one");
    let u = gw.usage("bkt");
    assert_eq!(
        (u["bytes"].as_u64(), u["objects"].as_u64()),
        (Some(3), Some(1)),
        "replace drops the old usage: {u}"
    );

    // Reader.
    let r = rename(&gw, &gw.reader, "bkt", "two", "three", false);
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (403, Some("AccessDenied")),
        "{}",
        r.body_str()
    );
    assert_eq!(gw.get_raw("bkt", "two", &[]).body, b"one");

    // Bad destinations.
    let before = tree(gw.root.parent().unwrap());
    for bad in [
        "../x",
        "%2e%2e/x",
        "a/../../x",
        "/x",
        "a//b",
        "a%00b",
        "a%5Cb",
    ] {
        let r = rename(&gw, &gw.backend, "bkt", "two", bad, false);
        assert_eq!(r.status, 400, "rename to {bad}: {}", r.body_str());
        assert_eq!(
            r.s3_code().as_deref(),
            Some("InvalidArgument"),
            "rename to {bad}"
        );
    }
    assert_eq!(gw.get_raw("bkt", "two", &[]).body, b"one");
    let after = tree(gw.root.parent().unwrap());
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(new.is_empty(), "files appeared: {new:?}");

    // Prefix to object and object to prefix are refused.
    let r = rename(&gw, &gw.backend, "bkt", "two", "dir/", false);
    assert!(
        (400..500).contains(&r.status),
        "object to a prefix: {} {}",
        r.status,
        r.body_str()
    );
    assert_eq!(gw.get_raw("bkt", "two", &[]).body, b"one");
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_prefix_moves_a_whole_directory_with_one_rename() {
    let gw = Gateway::start_with(GatewayOptions {
        no_fsync: true,
        ..Default::default()
    });
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let mut keys: Vec<String> = (0..2000).map(|i| format!("dir/f{i:04}")).collect();
    keys.extend((0..20).map(|i| format!("dir/sub/s{i:02}")));
    keys.push("dir/".to_string());
    keys.push("other".to_string());
    let mut set = tokio::task::JoinSet::new();
    for w in 0..16 {
        let c = c.clone();
        let mine: Vec<String> = keys.iter().skip(w).step_by(16).cloned().collect();
        set.spawn(async move {
            for k in mine {
                let body = if k.ends_with('/') {
                    Vec::new()
                } else {
                    k.clone().into_bytes()
                };
                c.put_object()
                    .bucket("bkt")
                    .key(&k)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let usage = gw.usage("bkt");
    let ino = std::fs::metadata(gw.root.join("bkt/dir")).unwrap().ino();
    // (The marker `dir/` itself is checked with HEAD; whether a prefix listing includes it is
    // gateway_listing's business.)
    let mut before: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("dir/") && k.as_str() != "dir/")
        .cloned()
        .collect();
    before.sort();
    let listed: Vec<String> = list_keys(&c, "bkt", "dir/")
        .await
        .into_iter()
        .filter(|k| k != "dir/")
        .collect();
    assert_eq!(listed, before, "listing before the rename");
    assert_eq!(gw.head_raw("bkt", "dir/").status, 200);

    // Destination must be a prefix too.
    let r = rename(&gw, &gw.backend, "bkt", "dir/", "newdir", false);
    assert_eq!(r.status, 400, "prefix to an object key: {}", r.body_str());

    let r = rename(&gw, &gw.backend, "bkt", "dir/", "newdir/", false);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        std::fs::metadata(gw.root.join("bkt/newdir")).unwrap().ino(),
        ino,
        "one rename(2) of the directory"
    );
    assert!(!gw.root.join("bkt/dir").exists());

    assert!(
        list_keys(&c, "bkt", "dir/").await.is_empty(),
        "keys left under the old prefix"
    );
    let want: Vec<String> = before.iter().map(|k| format!("new{k}")).collect();
    let listed: Vec<String> = list_keys(&c, "bkt", "newdir/")
        .await
        .into_iter()
        .filter(|k| k != "newdir/")
        .collect();
    assert_eq!(listed, want);
    assert_eq!(
        gw.head_raw("bkt", "newdir/").status,
        200,
        "the marker moved with its directory"
    );
    assert_eq!(gw.head_raw("bkt", "dir/").status, 404);
    let all = list_keys(&c, "bkt", "").await;
    assert!(
        all.contains(&"newdir/".to_string()),
        "marker listed under its new name"
    );
    assert!(
        !all.iter().any(|k| k.starts_with("dir/")),
        "old keys still listed"
    );
    let g = gw.get_raw("bkt", "newdir/f0042", &[]);
    assert_eq!(g.body, b"dir/f0042");
    assert_eq!(gw.usage("bkt"), usage, "usage moves with the objects");

    // Onto an existing prefix: conflict.
    assert_eq!(gw.put_raw("bkt", "taken/x", &[], b"x").status, 200);
    let r = rename(&gw, &gw.backend, "bkt", "newdir/", "taken/", false);
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (409, Some("KeyConflict")),
        "{}",
        r.body_str()
    );
    // A missing prefix.
    let r = rename(&gw, &gw.backend, "bkt", "nodir/", "elsewhere/", false);
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (404, Some("NoSuchKey")),
        "{}",
        r.body_str()
    );
    // A nested destination whose parents do not exist yet.
    let r = rename(
        &gw,
        &gw.backend,
        "bkt",
        "newdir/sub/",
        "deep/er/sub2/",
        false,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(list_keys(&c, "bkt", "deep/er/sub2/").await.len(), 20);
}
