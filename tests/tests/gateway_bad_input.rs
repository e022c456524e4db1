//! s3fs-gateway end to end: hostile and malformed input (docs/gateway.md "Keys", "Limits",
//! DESIGN.md section 8). Raw signed requests with hand-encoded paths, since the SDK normalises.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::SystemTime;

use gpair_tests::*;

/// Paths under the test's temporary directory (parent of the root), excluding the gateway's
/// own state directory and its log, which legitimately change.
fn snapshot(gw: &Gateway) -> Vec<PathBuf> {
    let base = gw.root.parent().unwrap();
    tree(base)
        .into_iter()
        .filter(|p| !p.starts_with("west/.gpair-gateway"))
        .collect()
}

fn unique(tag: &str) -> String {
    format!("gpair-evil-{}-{tag}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_keys_are_refused_and_nothing_escapes() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    assert_eq!(gw.put_raw("bkt", "existing", &[], b"ok").status, 200);
    let before = snapshot(&gw);
    let before_tmp_root: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let evil = unique("x");
    let long_component = "c".repeat(256);
    let cases: Vec<(String, &str)> = vec![
        (format!("/bkt/a/../{evil}"), "InvalidArgument"),
        (format!("/bkt/../{evil}"), "InvalidArgument"),
        (format!("/bkt/a/../../{evil}"), "InvalidArgument"),
        (format!("/bkt/a/../../../{evil}"), "InvalidArgument"),
        (format!("/bkt/..%2F{evil}"), "InvalidArgument"),
        (format!("/bkt/..%2f..%2f{evil}"), "InvalidArgument"),
        (format!("/bkt/%2e%2e/{evil}"), "InvalidArgument"),
        (format!("/bkt/%2E%2E%2F{evil}"), "InvalidArgument"),
        (format!("/bkt/a/%2e%2e/%2e%2e/{evil}"), "InvalidArgument"),
        (format!("/bkt/./{evil}"), "InvalidArgument"),
        (format!("/bkt/a/%2e/{evil}"), "InvalidArgument"),
        (format!("/bkt//tmp/{evil}"), "InvalidArgument"),
        (format!("/bkt/%2Ftmp%2F{evil}"), "InvalidArgument"),
        (format!("/bkt/a//{evil}"), "InvalidArgument"),
        (format!("/bkt/a%5C..%5C..%5C{evil}"), "InvalidArgument"),
        (format!("/bkt/{evil}%5Cx"), "InvalidArgument"),
        (format!("/bkt/{evil}%00.txt"), "InvalidArgument"),
        (format!("/bkt/{evil}%01"), "InvalidArgument"),
        (format!("/bkt/{evil}%0A"), "InvalidArgument"),
        (format!("/bkt/{evil}%7F"), "InvalidArgument"),
        (format!("/bkt/{long_component}"), "InvalidArgument"),
        (
            format!("/bkt/{}", vec!["d".repeat(200); 6].join("/")),
            "KeyTooLongError",
        ),
    ];
    for (path, code) in &cases {
        for method in ["PUT", "GET", "DELETE", "HEAD"] {
            let body: &[u8] = if method == "PUT" { b"evil bytes" } else { b"" };
            let r = gw.signed_hand_encoded(&gw.backend, method, path, &[], body);
            assert_eq!(r.status, 400, "{method} {path}: {}", r.body_str());
            if method != "HEAD" {
                assert_eq!(
                    r.s3_code().as_deref(),
                    Some(*code),
                    "{method} {path}: {}",
                    r.body_str()
                );
            }
        }
        // multipart create and copy-source with the same key
        let r = gw.signed_hand_encoded(&gw.backend, "POST", &format!("{path}?uploads"), &[], b"");
        assert_eq!(r.status, 400, "POST {path}?uploads: {}", r.body_str());
        let src = path.strip_prefix("/bkt").unwrap();
        let r = gw.signed(
            &gw.backend,
            "PUT",
            "/bkt/copy-dst",
            &[("x-amz-copy-source", &format!("/bkt{src}"))],
            b"",
        );
        assert_eq!(r.status, 400, "copy from {path}: {}", r.body_str());
        assert!(!gw.root.join("bkt/copy-dst").exists());
    }
    // A key of exactly 1024 bytes (components of at most 255) is fine.
    let ok_key = vec!["e".repeat(204); 5].join("/");
    assert_eq!(ok_key.len(), 1024);
    let r = gw.put_raw("bkt", &ok_key, &[], b"long");
    assert_eq!(r.status, 200, "1024-byte key: {}", r.body_str());
    let r = gw.signed(&gw.backend, "DELETE", &format!("/bkt/{ok_key}"), &[], b"");
    assert_eq!(r.status, 204);
    assert!(
        !gw.root.join("bkt").join("e".repeat(204)).exists(),
        "implicit parents removed"
    );

    let after = snapshot(&gw);
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(new.is_empty(), "files created by refused requests: {new:?}");
    let tmp_new: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !before_tmp_root.contains(n) && n.to_string_lossy().contains(&evil))
        .collect();
    assert!(tmp_new.is_empty(), "escaped into /tmp: {tmp_new:?}");
    assert!(!PathBuf::from("/").join(&evil).exists());
    assert_eq!(gw.get_raw("bkt", "existing", &[]).body, b"ok");
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_bucket_names_are_refused() {
    let gw = Gateway::start();
    gw.create_bucket("good-bucket");
    let before = snapshot(&gw);
    let long = "a".repeat(64);
    for bucket in [
        "AB",
        "a",
        "ab",
        "bucket_x",
        "Bucket",
        "-abc",
        "abc-",
        ".abc",
        "a..b",
        long.as_str(),
        ".gpair-gateway",
    ] {
        for (method, path) in [
            ("PUT", format!("/{bucket}")),
            ("PUT", format!("/{bucket}/key")),
            ("GET", format!("/{bucket}/key")),
            ("GET", format!("/{bucket}")),
        ] {
            let body: &[u8] = if path.ends_with("key") && method == "PUT" {
                b"x"
            } else {
                b""
            };
            let r = gw.signed(&gw.backend, method, &path, &[], body);
            assert_eq!(
                (r.status, r.s3_code().as_deref()),
                (400, Some("InvalidBucketName")),
                "{method} {path}: {}",
                r.body_str()
            );
        }
    }
    // The gateway's own directory is never reachable as a bucket.
    let r = gw.signed(
        &gw.backend,
        "GET",
        "/.gpair-gateway/credentials.toml",
        &[],
        b"",
    );
    assert_eq!(r.status, 400);
    assert!(!r.body_str().contains(&gw.backend.secret_key));
    let r = gw.signed(&gw.backend, "GET", "/.gpair-gateway?list-type=2", &[], b"");
    assert_eq!(r.status, 400);
    let r = gw.signed_hand_encoded(&gw.backend, "GET", "/%2Egpair-gateway/tmp", &[], b"");
    assert_eq!(r.status, 400);
    assert_eq!(
        snapshot(&gw),
        before,
        "invalid bucket names created something"
    );
    let r = gw.signed(&gw.backend, "GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body_str().contains("good-bucket"));
    assert!(!r.body_str().contains("gpair-gateway"));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_get_431_and_the_server_goes_on() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    assert_eq!(gw.put_raw("bkt", "k", &[], b"keep").status, 200);

    // A 100 KiB header.
    let big = "h".repeat(100 * 1024);
    let mut headers = sign_headers(
        gw.addr,
        &gw.backend,
        "GET",
        "/bkt/k",
        &[],
        b"",
        SystemTime::now(),
    );
    headers.push(("x-junk".into(), big.clone()));
    let r = raw_exchange_concurrent(gw.addr, &request_head("GET", "/bkt/k", &headers), b"");
    assert!(
        r.status == 431 || r.status == 400,
        "100 KiB header: status {} {}",
        r.status,
        r.body_str()
    );
    // Many headers adding up to over the limit.
    let mut headers = sign_headers(
        gw.addr,
        &gw.backend,
        "GET",
        "/bkt/k",
        &[],
        b"",
        SystemTime::now(),
    );
    for i in 0..100 {
        headers.push((format!("x-junk-{i}"), "j".repeat(1000)));
    }
    let r = raw_exchange_concurrent(gw.addr, &request_head("GET", "/bkt/k", &headers), b"");
    assert!(
        r.status == 431 || r.status == 400,
        "100 x 1 KB headers: status {}",
        r.status
    );
    // Still serving.
    assert_eq!(gw.get_raw("bkt", "k", &[]).body, b"keep");

    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_xml_body_is_max_message_length_exceeded() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    assert_eq!(gw.put_raw("bkt", "k", &[], b"keep").status, 200);

    // A 5 MiB DeleteObjects body: valid XML naming one key, padded with whitespace. Without
    // the limit it would delete "k".
    let mut xml =
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Object><Key>k</Key></Object>".to_vec();
    xml.extend(std::iter::repeat_n(b' ', 5 << 20));
    xml.extend_from_slice(b"</Delete>");
    let md5 = md5_b64(&xml);
    let headers = sign_headers(
        gw.addr,
        &gw.backend,
        "POST",
        "/bkt?delete",
        &[("content-md5", &md5), ("content-type", "application/xml")],
        &xml,
        SystemTime::now(),
    );
    let mut headers = headers;
    headers.push(("content-length".into(), xml.len().to_string()));
    let r = raw_exchange_concurrent(
        gw.addr,
        &request_head("POST", "/bkt?delete", &headers),
        &xml,
    );
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (400, Some("MaxMessageLengthExceeded")),
        "5 MiB DeleteObjects: {}",
        r.body_str()
    );
    assert_eq!(
        gw.get_raw("bkt", "k", &[]).body,
        b"keep",
        "oversized DeleteObjects deleted the key"
    );
    // Control: the same request without the padding deletes it.
    let xml =
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Object><Key>k</Key></Object></Delete>";
    let r = gw.signed(
        &gw.backend,
        "POST",
        "/bkt?delete",
        &[
            ("content-md5", &md5_b64(xml)),
            ("content-type", "application/xml"),
        ],
        xml,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(gw.head_raw("bkt", "k").status, 404);

    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn user_metadata_over_2_kib_is_metadata_too_large() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    assert_eq!(gw.put_raw("bkt", "k", &[], b"keep").status, 200);

    // User metadata over 2 KiB.
    let meta = "m".repeat(2100);
    let r = gw.put_raw("bkt", "meta", &[("x-amz-meta-big", &meta)], b"x");
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (400, Some("MetadataTooLarge")),
        "{}",
        r.body_str()
    );
    assert_eq!(gw.head_raw("bkt", "meta").status, 404);
    assert!(!gw.root.join("bkt/meta").exists());
    let vals: Vec<String> = (0..5).map(|_| "v".repeat(500)).collect();
    let hs: Vec<(String, &str)> = (0..5)
        .map(|i| (format!("x-amz-meta-k{i}"), vals[i].as_str()))
        .collect();
    let hs_ref: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let r = gw.put_raw("bkt", "meta", &hs_ref, b"x");
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (400, Some("MetadataTooLarge")),
        "5 x 500 bytes: {}",
        r.body_str()
    );
    // Under the limit is fine.
    let meta = "m".repeat(1500);
    let r = gw.put_raw("bkt", "meta", &[("x-amz-meta-ok", &meta)], b"x");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        gw.head_raw("bkt", "meta").header("x-amz-meta-ok"),
        Some(meta.as_str())
    );
    // CreateMultipartUpload with too much metadata.
    let meta = "m".repeat(2100);
    let r = gw.signed(
        &gw.backend,
        "POST",
        "/bkt/mp?uploads",
        &[("x-amz-meta-big", &meta)],
        b"",
    );
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (400, Some("MetadataTooLarge")),
        "{}",
        r.body_str()
    );

    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_do_not_hurt_the_server() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    assert_eq!(gw.put_raw("bkt", "k", &[], b"fine").status, 200);

    // Missing or bad signatures.
    let r = raw_request(gw.addr, "GET", "/bkt/k", &[], b"");
    assert_eq!(r.status, 403);
    let r = raw_request(
        gw.addr,
        "GET",
        "/bkt/k",
        &[("authorization".into(), "AWS4-HMAC-SHA256 garbage".into())],
        b"",
    );
    assert!(
        r.status == 400 || r.status == 403,
        "{} {}",
        r.status,
        r.body_str()
    );
    let mut headers = sign_headers(
        gw.addr,
        &gw.backend,
        "GET",
        "/bkt/k",
        &[],
        b"",
        SystemTime::now(),
    );
    for (k, v) in headers.iter_mut() {
        if k == "authorization" {
            *v = v.replace("Signature=", "Signature=0");
        }
    }
    let r = raw_request(gw.addr, "GET", "/bkt/k", &headers, b"");
    assert_eq!(r.status, 403, "{}", r.body_str());

    // Garbage XML bodies.
    for body in [
        &b"<Delete><Object><Key>k"[..],
        b"not xml at all",
        b"<Delete></Nope>",
        b"",
    ] {
        let r = gw.signed(
            &gw.backend,
            "POST",
            "/bkt?delete",
            &[("content-md5", &md5_b64(body))],
            body,
        );
        assert_eq!(
            r.status,
            400,
            "DeleteObjects {:?}: {}",
            String::from_utf8_lossy(body),
            r.body_str()
        );
    }
    let r = gw.signed(
        &gw.backend,
        "POST",
        "/bkt/k?uploadId=nope",
        &[],
        b"<CompleteMultipartUpload><Part>",
    );
    assert!((400..500).contains(&r.status), "{}", r.status);
    // Bad ranges, bad part numbers, bad max-keys.
    let r = gw.get_raw("bkt", "k", &[("range", "bytes=zz-yy")]);
    assert!(
        r.status == 200 || r.status == 400 || r.status == 416,
        "nonsense range: {}",
        r.status
    );
    let r = gw.signed(&gw.backend, "GET", "/bkt?list-type=2&max-keys=-5", &[], b"");
    assert!((200..500).contains(&r.status), "{}", r.status);
    let r = gw.signed(
        &gw.backend,
        "GET",
        "/bkt?list-type=2&continuation-token=%FF%FE!!",
        &[],
        b"",
    );
    assert!(
        (400..500).contains(&r.status),
        "bad continuation token: {} {}",
        r.status,
        r.body_str()
    );
    let r = gw.signed(
        &gw.backend,
        "PUT",
        "/bkt/k?partNumber=0&uploadId=x",
        &[],
        b"x",
    );
    assert!((400..500).contains(&r.status), "{}", r.status);
    // Requests that are not HTTP.
    let r = raw_exchange(
        gw.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"",
    );
    assert_ne!(r.status, 200);
    let r = raw_exchange(
        gw.addr,
        b"GET /bkt/k HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"",
    );
    assert_ne!(r.status, 200);
    let r = raw_exchange(
        gw.addr,
        b"GET /bkt/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"",
    );
    assert_ne!(r.status, 200);

    // Still serving, never panicked.
    assert_eq!(gw.get_raw("bkt", "k", &[]).body, b"fine");
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}
