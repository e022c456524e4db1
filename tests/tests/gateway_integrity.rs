//! s3fs-gateway end to end: integrity (docs/gateway.md "Integrity", "Object metadata"):
//! Content-MD5 and x-amz-checksum-*, body length, stored ETags, conditional requests.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use gpair_tests::*;

/// Nothing for `key` in the bucket: HEAD 404, no file, nothing left in staging.
fn assert_absent(gw: &Gateway, bucket: &str, key: &str) {
    let h = gw.head_raw(bucket, key);
    assert_eq!(h.status, 404, "{bucket}/{key} exists after a refused write");
    assert!(
        !gw.root.join(bucket).join(key).exists(),
        "{bucket}/{key} on disk"
    );
    let tmp = gw.root.join(".gpair-gateway/tmp");
    assert!(
        poll_until(Duration::from_secs(10), || files_in(&tmp).is_empty()),
        "staging files left: {:?}",
        files_in(&tmp)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn content_md5_verified() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let data = test_bytes(100_000, 1);

    let (status, code) = expect_err(
        c.put_object()
            .bucket("bkt")
            .key("bad")
            .content_md5(md5_b64(b"other bytes"))
            .body(ByteStream::from(data.clone()))
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "BadDigest"));
    assert_absent(&gw, "bkt", "bad");

    // raw, too
    let r = gw.put_raw("bkt", "bad2", &[("content-md5", &md5_b64(b"x"))], &data);
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (400, Some("BadDigest")),
        "{}",
        r.body_str()
    );
    assert_absent(&gw, "bkt", "bad2");

    // A mismatch on overwrite keeps the old object.
    gw.put_raw("bkt", "keep", &[], b"old");
    let r = gw.put_raw("bkt", "keep", &[("content-md5", &md5_b64(b"x"))], b"new");
    assert_eq!(r.status, 400);
    assert_eq!(std::fs::read(gw.root.join("bkt/keep")).unwrap(), b"old");

    c.put_object()
        .bucket("bkt")
        .key("good")
        .content_md5(md5_b64(&data))
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(std::fs::read(gw.root.join("bkt/good")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn checksum_headers_verified() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283, "test's own CRC32C");
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let data = test_bytes(50_000, 2);

    // CRC32C: wrong, then right.
    let r = gw.put_raw(
        "bkt",
        "c1",
        &[("x-amz-checksum-crc32c", &crc32c_b64(b"nope"))],
        &data,
    );
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (400, Some("BadDigest")),
        "{}",
        r.body_str()
    );
    assert_absent(&gw, "bkt", "c1");
    let r = gw.put_raw(
        "bkt",
        "c1",
        &[("x-amz-checksum-crc32c", &crc32c_b64(&data))],
        &data,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(std::fs::read(gw.root.join("bkt/c1")).unwrap(), data);

    // SHA-256: wrong, then right.
    let r = gw.put_raw(
        "bkt",
        "s1",
        &[("x-amz-checksum-sha256", &sha256_b64(b"nope"))],
        &data,
    );
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (400, Some("BadDigest")),
        "{}",
        r.body_str()
    );
    assert_absent(&gw, "bkt", "s1");
    let r = gw.put_raw(
        "bkt",
        "s1",
        &[("x-amz-checksum-sha256", &sha256_b64(&data))],
        &data,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(std::fs::read(gw.root.join("bkt/s1")).unwrap(), data);

    // Through the SDK with explicit wrong values.
    let c = gw.client(&gw.backend);
    let (status, code) = expect_err(
        c.put_object()
            .bucket("bkt")
            .key("c2")
            .checksum_crc32_c(crc32c_b64(b"wrong"))
            .body(ByteStream::from(data.clone()))
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "BadDigest"));
    assert_absent(&gw, "bkt", "c2");
    let (status, code) = expect_err(
        c.put_object()
            .bucket("bkt")
            .key("s2")
            .checksum_sha256(sha256_b64(b"wrong"))
            .body(ByteStream::from(data.clone()))
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "BadDigest"));
    assert_absent(&gw, "bkt", "s2");

    // And with checksums the SDK computes itself (possibly as aws-chunked trailers).
    for (alg, key) in [
        (ChecksumAlgorithm::Crc32C, "sdk-crc32c"),
        (ChecksumAlgorithm::Sha256, "sdk-sha256"),
        (ChecksumAlgorithm::Crc32, "sdk-crc32"),
        (ChecksumAlgorithm::Sha1, "sdk-sha1"),
    ] {
        c.put_object()
            .bucket("bkt")
            .key(key)
            .checksum_algorithm(alg.clone())
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        assert_eq!(
            std::fs::read(gw.root.join("bkt").join(key)).unwrap(),
            data,
            "{alg:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn content_length_must_match_the_body() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let body = test_bytes(20_000, 3);

    // Shorter Content-Length than the body (the signature covers the whole body): the
    // server sees a truncated payload whose hash does not match.
    let headers = sign_headers(
        gw.addr,
        &gw.backend,
        "PUT",
        "/bkt/short",
        &[("content-length", "10000")],
        &body,
        SystemTime::now(),
    );
    let r = raw_exchange_concurrent(gw.addr, &request_head("PUT", "/bkt/short", &headers), &body);
    assert!(
        (400..500).contains(&r.status),
        "short content-length: {} {}",
        r.status,
        r.body_str()
    );
    assert_absent(&gw, "bkt", "short");

    // Longer Content-Length than the body (unsigned payload, so only the length can tell).
    let headers = sign_headers_unsigned(
        gw.addr,
        &gw.backend,
        "PUT",
        "/bkt/long",
        &[("content-length", "30000")],
        SystemTime::now(),
    );
    let r = raw_exchange(gw.addr, &request_head("PUT", "/bkt/long", &headers), &body);
    // The client half-closes; the server must not store 20000 bytes as the object.
    assert!(
        r.status == 0 || r.status == 400,
        "long content-length: {} {}",
        r.status,
        r.body_str()
    );
    if r.status == 400 {
        assert_eq!(r.s3_code().as_deref(), Some("IncompleteBody"));
    }
    assert_absent(&gw, "bkt", "long");

    // Control: the same unsigned request with the right length works.
    let headers = sign_headers_unsigned(
        gw.addr,
        &gw.backend,
        "PUT",
        "/bkt/right",
        &[("content-length", "20000")],
        SystemTime::now(),
    );
    let r = raw_exchange(gw.addr, &request_head("PUT", "/bkt/right", &headers), &body);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(std::fs::read(gw.root.join("bkt/right")).unwrap(), body);
}

/// The ETag is stored at write time, not recomputed: changing the bytes behind the gateway's
/// back does not change it.
#[tokio::test(flavor = "multi_thread")]
async fn etag_is_stored_not_recomputed() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let data = test_bytes(4096, 4);
    let r = gw.put_raw("bkt", "e", &[], &data);
    assert_eq!(r.status, 200);
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", md5_hex(&data)));

    // Rewrite the file in place (same inode, so the xattr stays).
    let other = test_bytes(4096, 5);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(gw.root.join("bkt/e"))
            .unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&other).unwrap();
        f.sync_all().unwrap();
    }
    let g = gw.get_raw("bkt", "e", &[]);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, other, "GET serves the file's bytes");
    assert_eq!(
        g.header("etag"),
        Some(etag.as_str()),
        "ETag recomputed instead of stored"
    );
    let h = gw.head_raw("bkt", "e");
    assert_eq!(h.header("etag"), Some(etag.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_put() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let r = gw.put_raw("bkt", "k", &[("if-none-match", "*")], b"first");
    assert_eq!(
        r.status,
        200,
        "If-None-Match:* on a missing key: {}",
        r.body_str()
    );
    let etag = r.header("etag").unwrap().to_string();

    let r = gw.put_raw("bkt", "k", &[("if-none-match", "*")], b"second");
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (412, Some("PreconditionFailed")),
        "{}",
        r.body_str()
    );
    assert_eq!(std::fs::read(gw.root.join("bkt/k")).unwrap(), b"first");

    let r = gw.put_raw(
        "bkt",
        "k",
        &[("if-match", "\"0123456789abcdef0123456789abcdef\"")],
        b"third",
    );
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (412, Some("PreconditionFailed")),
        "{}",
        r.body_str()
    );
    assert_eq!(std::fs::read(gw.root.join("bkt/k")).unwrap(), b"first");

    let r = gw.put_raw("bkt", "k", &[("if-match", &etag)], b"fourth");
    assert_eq!(
        r.status,
        200,
        "If-Match with the current ETag: {}",
        r.body_str()
    );
    assert_eq!(std::fs::read(gw.root.join("bkt/k")).unwrap(), b"fourth");

    // If-Match on a missing key: 404 NoSuchKey in S3 (412 in some implementations); never stored.
    let r = gw.put_raw("bkt", "missing", &[("if-match", &etag)], b"x");
    assert!(
        r.status == 404 || r.status == 412,
        "{} {}",
        r.status,
        r.body_str()
    );
    assert_absent(&gw, "bkt", "missing");
    assert!(files_in(&gw.root.join(".gpair-gateway/tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_get_and_head() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    let r = gw.put_raw("bkt", "k", &[], b"conditional");
    let etag = r.header("etag").unwrap().to_string();
    let past = http_date(SystemTime::now() - Duration::from_secs(86_400));
    let future = http_date(SystemTime::now() + Duration::from_secs(86_400));
    let wrong = "\"ffffffffffffffffffffffffffffffff\"";

    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![("if-none-match", &etag)], 304),
        (vec![("if-none-match", wrong)], 200),
        (vec![("if-match", &etag)], 200),
        (vec![("if-match", wrong)], 412),
        (vec![("if-modified-since", &future)], 304),
        (vec![("if-modified-since", &past)], 200),
        (vec![("if-unmodified-since", &past)], 412),
        (vec![("if-unmodified-since", &future)], 200),
        // S3 precedence: If-Match true + If-Unmodified-Since false -> 200.
        (
            vec![("if-match", &etag), ("if-unmodified-since", &past)],
            200,
        ),
        // If-None-Match false + If-Modified-Since true -> 304.
        (
            vec![("if-none-match", &etag), ("if-modified-since", &past)],
            304,
        ),
    ];
    for (headers, want) in &cases {
        let g = gw.get_raw("bkt", "k", headers);
        assert_eq!(g.status, *want, "GET {headers:?}: {}", g.body_str());
        match want {
            200 => assert_eq!(g.body, b"conditional"),
            304 => {
                assert!(g.body.is_empty(), "304 with a body");
            }
            412 => assert_eq!(g.s3_code().as_deref(), Some("PreconditionFailed")),
            _ => unreachable!(),
        }
        let h = gw.signed(&gw.backend, "HEAD", "/bkt/k", headers, b"");
        assert_eq!(h.status, *want, "HEAD {headers:?}");
    }
    // RFC 9110 15.4.5 (and S3): a 304 carries the ETag a 200 would have had.
    let g = gw.get_raw("bkt", "k", &[("if-none-match", &etag)]);
    assert_eq!(g.status, 304);
    assert_eq!(
        g.header("etag"),
        Some(etag.as_str()),
        "304 carries the ETag"
    );
}
