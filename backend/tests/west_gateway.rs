//! The `gateway` dialect against the real s3fs-gateway binary (`cargo build -p s3fs-gateway`
//! first): every WestStore method, and what the gateway's disk shows afterwards.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use common::*;
use gpair_backend::west::keys::west_key;
use gpair_backend::west::{connect, CheckStage, Dialect, GpeerConn, WestStore};

const BUCKET: &str = "west-bucket";

fn conn(gw: &Gateway, endpoint: &str, secret: &str) -> GpeerConn {
    GpeerConn {
        endpoint: endpoint.to_string(),
        access_key: gw.access_key.clone(),
        secret_key: secret.to_string(),
        region: "us-east-1".into(),
        dialect: Dialect::Gateway,
    }
}

/// A gateway, a store on it with `BUCKET` created, and a raw client.
async fn setup() -> (Gateway, Arc<dyn WestStore>, S3Below) {
    let gw = Gateway::start();
    let store = connect(&conn(&gw, &gw.endpoint(), &gw.secret_key));
    assert_eq!(store.dialect(), Dialect::Gateway);
    store.create_bucket(BUCKET).await.unwrap();
    let below = S3Below {
        client: raw_client(&gw.endpoint(), &gw.access_key, &gw.secret_key),
        dialect: Dialect::Gateway,
    };
    (gw, store, below)
}

/// Whether the file has no data extents (a placeholder on the gateway's disk).
fn has_no_data(path: &std::path::Path) -> bool {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: lseek on a descriptor we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO)
}

#[tokio::test(flavor = "multi_thread")]
async fn buckets_and_check() {
    let (gw, store, _) = setup().await;
    buckets(store.as_ref()).await;
    let secret = gw.secret_key.clone();
    check_stages_common(
        |ep| connect(&conn(&gw, ep, &secret)),
        &gw.endpoint(),
        BUCKET,
    )
    .await;
    // Wrong secret, and unknown access key: Auth, naming the endpoint.
    let f = connect(&conn(&gw, &gw.endpoint(), "wrong-secret"))
        .check(Some(BUCKET))
        .await
        .unwrap_err();
    assert_eq!(f.stage, CheckStage::Auth, "{f}");
    assert!(f.message.contains(&gw.endpoint()), "{f}");
    let f = connect(&conn(&gw, &gw.endpoint(), "wrong-secret"))
        .check(None)
        .await
        .unwrap_err();
    assert_eq!(f.stage, CheckStage::Auth, "{f}");
    let mut c = conn(&gw, &gw.endpoint(), &gw.secret_key);
    c.access_key = "AKUNKNOWN00000000000".into();
    let f = connect(&c).check(None).await.unwrap_err();
    assert_eq!(f.stage, CheckStage::Auth, "{f}");
    // Requests with a wrong secret are permanent errors.
    let bad = connect(&conn(&gw, &gw.endpoint(), "wrong-secret"));
    let e = bad.bucket_exists(BUCKET).await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_of_every_kind_with_metadata_on_disk() {
    let (gw, store, _) = setup().await;
    // Look at the disk before the behaviour deletes everything.
    let k = west_key("mirror", b"disk/file.bin");
    let m = file(1_000_000, 77);
    store.put_entry(BUCKET, &k, &m, GPAIR).await.unwrap();
    let path = gw.root.join(BUCKET).join("mirror/disk/file.bin");
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(
        md.len(),
        1_000_000,
        "the placeholder shows the logical size"
    );
    assert!(has_no_data(&path), "a placeholder holds no data");
    assert_eq!(md.mode() & 0o7777, m.mode & 0o7777);
    assert_eq!(md.mtime(), m.mtime_ns / 1_000_000_000);
    assert_eq!(md.mtime_nsec(), m.mtime_ns % 1_000_000_000);
    store
        .put_entry(BUCKET, &west_key("mirror", b"disk"), &dir(78), GPAIR)
        .await
        .unwrap();
    assert!(gw.root.join(BUCKET).join("mirror/disk").is_dir());
    store.delete_entry(BUCKET, &k, false).await.unwrap();
    store
        .delete_entry(BUCKET, &west_key("mirror", b"disk"), true)
        .await
        .unwrap();

    entries_of_every_kind(store.as_ref(), BUCKET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_tree() {
    let (_gw, store, _) = setup().await;
    common::deep_tree(store.as_ref(), BUCKET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_and_long_names() {
    let (_gw, store, below) = setup().await;
    awkward_names(store.as_ref(), &below, BUCKET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_rename_with_many_entries_is_one_rename() {
    let (gw, store, _) = setup().await;
    // The directory's inode survives: the gateway moved it with one rename(2).
    let probe = west_key("ren", b"probe");
    store
        .put_entry(BUCKET, &probe, &dir(9), GPAIR)
        .await
        .unwrap();
    for i in 0..50 {
        let k = west_key("ren", format!("probe/f{i}").as_bytes());
        store
            .put_entry(BUCKET, &k, &file(i, 900 + i), GPAIR)
            .await
            .unwrap();
    }
    let ino = std::fs::metadata(gw.root.join(BUCKET).join("ren/probe"))
        .unwrap()
        .ino();
    store
        .rename(BUCKET, &probe, &west_key("ren", b"probe-moved"), true)
        .await
        .unwrap();
    let moved = gw.root.join(BUCKET).join("ren/probe-moved");
    assert_eq!(std::fs::metadata(&moved).unwrap().ino(), ino);
    assert_eq!(std::fs::read_dir(&moved).unwrap().count(), 50);
    store
        .rename(BUCKET, &west_key("ren", b"probe-moved"), &probe, true)
        .await
        .unwrap();
    for i in 0..50 {
        let k = west_key("ren", format!("probe/f{i}").as_bytes());
        store.delete_entry(BUCKET, &k, false).await.unwrap();
    }
    store.delete_entry(BUCKET, &probe, true).await.unwrap();

    directory_rename(store.as_ref(), BUCKET, 600).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_rename() {
    let (_gw, store, below) = setup().await;
    common::file_rename(store.as_ref(), &below, BUCKET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn set_attr_ltr_rtl() {
    let (gw, store, below) = setup().await;
    set_attr_cycle(store.as_ref(), &below, BUCKET).await;
    // After rtl the file on the gateway's disk is a placeholder again.
    let path = gw.root.join(BUCKET).join("attr/data.bin");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 100_000);
    assert!(has_no_data(&path));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_that_is_gone_gives_transient_errors() {
    let (mut gw, store, _) = setup().await;
    store
        .put_entry(BUCKET, &west_key("x", b"before"), &file(1, 1), GPAIR)
        .await
        .unwrap();
    gw.kill();
    unreachable_is_transient(store.as_ref(), BUCKET).await;
    let f = store.check(Some(BUCKET)).await.unwrap_err();
    assert_eq!(f.stage, CheckStage::Connect, "{f}");
    let _ = gw.log();
}

/// A fake server that answers every request with `response`, verbatim, then closes.
fn canned_server(response: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let response = Arc::new(response);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let response = Arc::clone(&response);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let _ = conn.write_all(&response);
            });
        }
    });
    format!("http://{addr}")
}

/// An HTTP answer with a correct content-length.
fn http(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn s3_error(status: &str, code: &str) -> Vec<u8> {
    http(
        status,
        "application/xml",
        &format!("<Error><Code>{code}</Code><Message>canned</Message></Error>"),
    )
}

fn store_at(endpoint: String) -> Arc<dyn WestStore> {
    connect(&GpeerConn {
        endpoint,
        access_key: "AK".into(),
        secret_key: "SK".into(),
        region: "us-east-1".into(),
        dialect: Dialect::Gateway,
    })
}

/// What a half-dead or confused server answers is classified: the outbox retries transient
/// errors and fails the item on permanent ones.
#[tokio::test(flavor = "multi_thread")]
async fn odd_answers_are_classified() {
    use gpair_backend::west::{ErrorKind, SetAttr};
    let cases: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        (
            "503 SlowDown",
            s3_error("503 Slow Down", "SlowDown"),
            ErrorKind::Transient,
        ),
        (
            "500",
            http("500 Internal Server Error", "text/plain", ""),
            ErrorKind::Transient,
        ),
        (
            "429",
            http("429 Too Many Requests", "text/plain", ""),
            ErrorKind::Transient,
        ),
        (
            "502 from a proxy, HTML",
            http("502 Bad Gateway", "text/html", "<html>bad gateway</html>"),
            ErrorKind::Transient,
        ),
        (
            "not HTTP",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
            ErrorKind::Transient,
        ),
        ("closed at once", Vec::new(), ErrorKind::Transient),
        (
            "truncated body",
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\nshort".to_vec(),
            ErrorKind::Transient,
        ),
        (
            "403 AccessDenied",
            s3_error("403 Forbidden", "AccessDenied"),
            ErrorKind::Permanent,
        ),
        (
            "404 NoSuchBucket",
            s3_error("404 Not Found", "NoSuchBucket"),
            ErrorKind::Permanent,
        ),
        (
            "409 KeyConflict",
            s3_error("409 Conflict", "KeyConflict"),
            ErrorKind::Permanent,
        ),
        (
            "400 InvalidArgument",
            s3_error("400 Bad Request", "InvalidArgument"),
            ErrorKind::Permanent,
        ),
    ];
    for (what, response, want) in cases {
        let store = store_at(canned_server(response));
        let e = store
            .put_entry(BUCKET, &west_key("p", b"d"), &dir(1), GPAIR)
            .await
            .unwrap_err();
        assert_eq!(e.kind, want, "{what}: put_entry: {e}");
        let e = store
            .set_attr(BUCKET, &west_key("p", b"f"), SetAttr::RemoteToLocal, GPAIR)
            .await
            .unwrap_err();
        assert_eq!(e.kind, want, "{what}: set_attr: {e}");
        let e = store.list(BUCKET, "p").await.unwrap_err();
        assert_eq!(e.kind, want, "{what}: list: {e}");
    }
    // A 200 whose body is not S3 XML: transient.
    let store = store_at(canned_server(http("200 OK", "text/html", "<html>hi</html")));
    let e = store.list(BUCKET, "p").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "200 + HTML: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn file_data_up_and_down() {
    let (_gw, store, _) = setup().await;
    data_cycle(store.as_ref(), BUCKET, true).await;
}
