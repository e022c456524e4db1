//! s3fs-gateway end to end: multipart uploads (docs/gateway.md "Operations", "Integrity").
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use gpair_tests::*;

const MIB: usize = 1 << 20;

async fn upload_parts(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    id: &str,
    parts: &[Vec<u8>],
) -> Vec<CompletedPart> {
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let out = c
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(p.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload part {n}: {e:?}"));
        let etag = out.e_tag().unwrap().to_string();
        assert_eq!(
            etag,
            format!("\"{}\"", md5_hex(p)),
            "part {n} ETag is its MD5"
        );
        done.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
    }
    done
}

async fn list_keys(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = c.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_complete_etag_bytes_and_list_parts() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let key = "mp/dir/object.bin";
    let parts = vec![
        test_bytes(5 * MIB, 1),
        test_bytes(5 * MIB, 2),
        test_bytes(MIB + 123, 3),
    ];
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key(key)
        .metadata("color", "red")
        .content_type("application/x-mp")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let done = upload_parts(&c, "bkt", key, &id, &parts).await;

    // ListParts
    let lp = c
        .list_parts()
        .bucket("bkt")
        .key(key)
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let got: Vec<(i32, i64, String)> = lp
        .parts()
        .iter()
        .map(|p| {
            (
                p.part_number().unwrap(),
                p.size().unwrap(),
                p.e_tag().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(i32, i64, String)> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| (i as i32 + 1, p.len() as i64, format!("\"{}\"", md5_hex(p))))
        .collect();
    assert_eq!(got, want);
    // ListParts paging
    let lp = c
        .list_parts()
        .bucket("bkt")
        .key(key)
        .upload_id(&id)
        .max_parts(2)
        .send()
        .await
        .unwrap();
    assert_eq!(lp.parts().len(), 2);
    assert_eq!(lp.is_truncated(), Some(true));
    let lp2 = c
        .list_parts()
        .bucket("bkt")
        .key(key)
        .upload_id(&id)
        .part_number_marker(lp.next_part_number_marker().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        lp2.parts()
            .iter()
            .map(|p| p.part_number().unwrap())
            .collect::<Vec<_>>(),
        vec![3]
    );

    // Before completion: not an object, not a file, not listed.
    assert!(list_keys(&c, "bkt").await.is_empty());
    let (status, _) = expect_err(c.head_object().bucket("bkt").key(key).send().await);
    assert_eq!(status, 404);
    assert!(!gw.root.join("bkt").join(key).exists());
    assert!(
        !gw.root.join("bkt/mp").exists(),
        "no directory for an incomplete upload"
    );
    let vs = c.list_object_versions().bucket("bkt").send().await.unwrap();
    assert!(vs.versions().is_empty());

    let out = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    let want_etag = multipart_etag(&refs);
    assert_eq!(out.e_tag(), Some(want_etag.as_str()));

    let all: Vec<u8> = parts.concat();
    assert_eq!(
        std::fs::read(gw.root.join("bkt").join(key)).unwrap(),
        all,
        "file on disk"
    );
    let r = gw.get_raw("bkt", key, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), all.len());
    assert!(r.body == all, "GET bytes differ");
    assert_eq!(r.header("etag"), Some(want_etag.as_str()));
    let h = c.head_object().bucket("bkt").key(key).send().await.unwrap();
    assert_eq!(h.e_tag(), Some(want_etag.as_str()));
    assert_eq!(h.content_length(), Some(all.len() as i64));
    assert_eq!(
        h.metadata().unwrap().get("color").map(String::as_str),
        Some("red")
    );
    assert_eq!(h.content_type(), Some("application/x-mp"));
    assert_eq!(list_keys(&c, "bkt").await, vec![key.to_string()]);

    // The upload is finished: gone from ListMultipartUploads, ListParts says NoSuchUpload.
    let ups = c
        .list_multipart_uploads()
        .bucket("bkt")
        .send()
        .await
        .unwrap();
    assert!(ups.uploads().is_empty());
    let (status, code) = expect_err(
        c.list_parts()
            .bucket("bkt")
            .key(key)
            .upload_id(&id)
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (404, "NoSuchUpload"));
    assert!(
        files_in(&gw.root.join(".gpair-gateway/multipart")).is_empty(),
        "part files left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_part_overwrite_and_single_part() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    // A single (last, so small) part.
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("one")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let first = test_bytes(1000, 7);
    upload_parts(&c, "bkt", "one", &id, &[first]).await;
    // Uploading the same part number again replaces it.
    let p = test_bytes(777, 8);
    let done = upload_parts(&c, "bkt", "one", &id, std::slice::from_ref(&p)).await;
    let out = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("one")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.e_tag(), Some(multipart_etag(&[&p]).as_str()));
    assert_eq!(std::fs::read(gw.root.join("bkt/one")).unwrap(), p);
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_abort_removes_the_upload() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("ab/x")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    upload_parts(
        &c,
        "bkt",
        "ab/x",
        &id,
        &[test_bytes(5 * MIB, 1), test_bytes(10, 2)],
    )
    .await;
    assert!(
        !files_in(&gw.root.join(".gpair-gateway/multipart")).is_empty(),
        "parts are staged"
    );
    c.abort_multipart_upload()
        .bucket("bkt")
        .key("ab/x")
        .upload_id(&id)
        .send()
        .await
        .unwrap();

    let (status, code) = expect_err(
        c.list_parts()
            .bucket("bkt")
            .key("ab/x")
            .upload_id(&id)
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (404, "NoSuchUpload"));
    let ups = c
        .list_multipart_uploads()
        .bucket("bkt")
        .send()
        .await
        .unwrap();
    assert!(ups.uploads().is_empty());
    assert!(list_keys(&c, "bkt").await.is_empty());
    assert!(!gw.root.join("bkt/ab").exists());
    assert!(
        files_in(&gw.root.join(".gpair-gateway/multipart")).is_empty(),
        "part files left after abort"
    );
    // Completing an aborted upload fails.
    let (status, code) = expect_err(
        c.complete_multipart_upload()
            .bucket("bkt")
            .key("ab/x")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .parts(
                        CompletedPart::builder()
                            .part_number(1)
                            .e_tag("\"x\"")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (404, "NoSuchUpload"));
    // Uploading into an unknown upload id fails.
    let (status, code) = expect_err(
        c.upload_part()
            .bucket("bkt")
            .key("ab/x")
            .upload_id("no-such-upload")
            .part_number(1)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (404, "NoSuchUpload"));
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_stale_uploads_are_cleaned() {
    let gw = Gateway::start_with(GatewayOptions {
        extra_config: "multipart_stale_after_secs = 1\nmultipart_cleanup_interval_secs = 1\n"
            .into(),
        ..Default::default()
    });
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("stale")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    upload_parts(&c, "bkt", "stale", &id, &[test_bytes(1000, 1)]).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ups = c
            .list_multipart_uploads()
            .bucket("bkt")
            .send()
            .await
            .unwrap();
        if ups.uploads().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stale upload still listed after 30 s: {:?}",
            ups.uploads()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, code) = expect_err(
        c.list_parts()
            .bucket("bkt")
            .key("stale")
            .upload_id(&id)
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (404, "NoSuchUpload"));
    let mp = gw.root.join(".gpair-gateway/multipart");
    assert!(
        poll_until(Duration::from_secs(10), || files_in(&mp).is_empty()),
        "part files left after cleanup"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_entity_too_small_invalid_part_and_order() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();

    // A small part that is not the last one.
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("small")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let done = upload_parts(
        &c,
        "bkt",
        "small",
        &id,
        &[test_bytes(MIB, 1), test_bytes(MIB, 2)],
    )
    .await;
    let (status, code) = expect_err(
        c.complete_multipart_upload()
            .bucket("bkt")
            .key("small")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "EntityTooSmall"));
    let (status, _) = expect_err(c.head_object().bucket("bkt").key("small").send().await);
    assert_eq!(status, 404);
    assert!(!gw.root.join("bkt/small").exists());

    // A wrong ETag.
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("wrong")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let parts = [test_bytes(5 * MIB, 3), test_bytes(100, 4)];
    let mut done = upload_parts(&c, "bkt", "wrong", &id, &parts).await;
    let good = done.clone();
    done[1] = CompletedPart::builder()
        .part_number(2)
        .e_tag(format!("\"{}\"", md5_hex(b"not the part")))
        .build();
    let (status, code) = expect_err(
        c.complete_multipart_upload()
            .bucket("bkt")
            .key("wrong")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "InvalidPart"));
    // A part that was never uploaded.
    let mut missing = vec![good[0].clone()];
    missing.push(
        CompletedPart::builder()
            .part_number(3)
            .e_tag("\"00000000000000000000000000000000\"")
            .build(),
    );
    let (status, code) = expect_err(
        c.complete_multipart_upload()
            .bucket("bkt")
            .key("wrong")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(missing))
                    .build(),
            )
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "InvalidPart"));
    // Descending order.
    let reversed: Vec<CompletedPart> = good.iter().rev().cloned().collect();
    let (status, code) = expect_err(
        c.complete_multipart_upload()
            .bucket("bkt")
            .key("wrong")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(reversed))
                    .build(),
            )
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "InvalidPartOrder"));
    assert!(!gw.root.join("bkt/wrong").exists());

    // The upload is still usable after the refused completes.
    let out = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("wrong")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(good))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.e_tag(),
        Some(multipart_etag(&[&parts[0], &parts[1]]).as_str())
    );
    assert_eq!(
        std::fs::read(gw.root.join("bkt/wrong")).unwrap(),
        parts.concat()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_part_with_wrong_content_md5_is_bad_digest() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let (status, code) = expect_err(
        c.upload_part()
            .bucket("bkt")
            .key("k")
            .upload_id(&id)
            .part_number(1)
            .content_md5(md5_b64(b"something else"))
            .body(ByteStream::from(test_bytes(1000, 1)))
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "BadDigest"));
    let lp = c
        .list_parts()
        .bucket("bkt")
        .key("k")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert!(lp.parts().is_empty(), "a part with a bad digest was stored");
}
