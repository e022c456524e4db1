//! s3fs-gateway end to end: listings (docs/gateway.md "Operations": ListObjects v1/v2,
//! ListObjectVersions, ListMultipartUploads; key order; narrow prefixes).
#![allow(clippy::unwrap_used)]

use aws_sdk_s3::primitives::ByteStream;
use gpair_tests::*;

/// PUTs every key (body = the key) with `parallel` concurrent writers.
async fn put_many(c: &aws_sdk_s3::Client, bucket: &str, keys: &[String], parallel: usize) {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..parallel {
        let c = c.clone();
        let bucket = bucket.to_string();
        let mine: Vec<String> = keys.iter().skip(w).step_by(parallel).cloned().collect();
        set.spawn(async move {
            for k in mine {
                c.put_object()
                    .bucket(&bucket)
                    .key(&k)
                    // directory markers take an empty body
                    .body(ByteStream::from(if k.ends_with('/') {
                        Vec::new()
                    } else {
                        k.clone().into_bytes()
                    }))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("put {k}: {e:?}"));
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Pages through ListObjectsV2; returns (keys, common prefixes, pages).
async fn list_v2(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: Option<&str>,
    delimiter: Option<&str>,
    max_keys: Option<i32>,
    start_after: Option<&str>,
) -> (Vec<String>, Vec<String>, usize) {
    let mut keys = Vec::new();
    let mut prefixes = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let out = c
            .list_objects_v2()
            .bucket(bucket)
            .set_prefix(prefix.map(str::to_string))
            .set_delimiter(delimiter.map(str::to_string))
            .set_max_keys(max_keys)
            .set_start_after(start_after.map(str::to_string))
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        let n = out.contents().len() + out.common_prefixes().len();
        if let Some(m) = max_keys {
            assert!(n <= m as usize, "page of {n} entries with max-keys {m}");
        }
        assert_eq!(out.key_count(), Some(n as i32), "KeyCount");
        keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
        prefixes.extend(
            out.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string()),
        );
        if out.is_truncated() == Some(true) {
            let t = out
                .next_continuation_token()
                .expect("truncated page without NextContinuationToken");
            token = Some(t.to_string());
            assert!(pages < 100_000, "listing does not end");
        } else {
            assert!(out.next_continuation_token().is_none());
            return (keys, prefixes, pages);
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort(); // String's Ord is byte order, as S3's
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn key_order_is_byte_order_with_tricky_names() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    // "a/…" is a directory on disk but must sort as "a/" (between "a.b" and "a0"), and
    // "ab/…" must sort after "ab.txt" and "ab-" but before "ab0".
    let keys: Vec<String> = [
        "A", "B", "a b", "a!", "a-b", "a.b", "a/b", "a/c", "a/c0/x", "a/c-", "a0", "aa", "ab-",
        "ab.txt", "ab/x", "ab/y/z", "ab0", "bkt", "z", "~x", "é", "éa", "日本", "Z/", "Z-", "dir/",
        "dir/sub/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    put_many(&c, "bkt", &keys, 4).await;
    let want = sorted(keys.clone());

    for page in [None, Some(1), Some(2), Some(3), Some(1000)] {
        let (got, prefixes, _) = list_v2(&c, "bkt", None, None, page, None).await;
        assert_eq!(got, want, "max-keys {page:?}");
        assert!(prefixes.is_empty());
    }

    // With the delimiter: contents and common prefixes, each in order.
    let (got, prefixes, _) = list_v2(&c, "bkt", None, Some("/"), None, None).await;
    let want_keys: Vec<String> = want.iter().filter(|k| !k.contains('/')).cloned().collect();
    assert_eq!(got, want_keys);
    assert_eq!(prefixes, vec!["Z/", "a/", "ab/", "dir/"]);
    // Paged by one entry at a time, the merged sequence is in order and complete.
    let mut merged = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = c
            .list_objects_v2()
            .bucket("bkt")
            .delimiter("/")
            .max_keys(1)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(out.contents().len() + out.common_prefixes().len(), 1);
        merged.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
        merged.extend(
            out.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string()),
        );
        if out.is_truncated() != Some(true) {
            break;
        }
        token = out.next_continuation_token().map(str::to_string);
    }
    let mut want_merged = want_keys.clone();
    want_merged.extend(["Z/", "a/", "ab/", "dir/"].iter().map(|s| s.to_string()));
    assert_eq!(merged, sorted(want_merged));

    // Prefix inside a directory, and a prefix that is a partial component.
    let (got, prefixes, _) = list_v2(&c, "bkt", Some("a/"), Some("/"), None, None).await;
    assert_eq!(got, vec!["a/b", "a/c", "a/c-"]);
    assert_eq!(prefixes, vec!["a/c0/"]);
    let (got, _, _) = list_v2(&c, "bkt", Some("a/c"), None, None, None).await;
    assert_eq!(got, vec!["a/c", "a/c-", "a/c0/x"]);
    let (got, _, _) = list_v2(&c, "bkt", Some("ab"), None, None, None).await;
    assert_eq!(got, vec!["ab-", "ab.txt", "ab/x", "ab/y/z", "ab0"]);
    let (got, _, _) = list_v2(&c, "bkt", Some("é"), None, None, None).await;
    assert_eq!(got, vec!["é", "éa"]);
    let (got, _, _) = list_v2(&c, "bkt", Some("nothing-here"), None, None, None).await;
    assert!(got.is_empty());

    // start-after: an existing key, a key that does not exist, and one inside a directory.
    for sa in ["a.b", "a/", "a/c", "ab.txt", "ab/y", "zzz", ""] {
        let (got, _, _) = list_v2(&c, "bkt", None, None, Some(2), Some(sa)).await;
        let w: Vec<String> = want.iter().filter(|k| k.as_str() > sa).cloned().collect();
        assert_eq!(got, w, "start-after {sa:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn continuation_tokens_across_2500_keys() {
    let gw = Gateway::start_with(GatewayOptions {
        no_fsync: true,
        ..Default::default()
    });
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let keys: Vec<String> = (0..2500).map(|i| format!("d{}/f{:05}", i % 7, i)).collect();
    put_many(&c, "bkt", &keys, 16).await;
    let want = sorted(keys.clone());

    // Default page size is 1000.
    let first = c.list_objects_v2().bucket("bkt").send().await.unwrap();
    assert_eq!(first.contents().len(), 1000);
    assert_eq!(first.is_truncated(), Some(true));

    let (got, _, pages) = list_v2(&c, "bkt", None, None, Some(1000), None).await;
    assert_eq!(pages, 3);
    assert_eq!(got, want);

    // max-keys above 1000 is capped at 1000.
    let out = c
        .list_objects_v2()
        .bucket("bkt")
        .max_keys(5000)
        .send()
        .await
        .unwrap();
    assert_eq!(out.contents().len(), 1000);

    let (got, _, pages) = list_v2(&c, "bkt", None, None, Some(7), None).await;
    assert_eq!(pages, 2500_usize.div_ceil(7));
    assert_eq!(got, want);

    let (got, _, _) = list_v2(&c, "bkt", Some("d3/"), None, Some(100), None).await;
    assert_eq!(
        got,
        want.iter()
            .filter(|k| k.starts_with("d3/"))
            .cloned()
            .collect::<Vec<_>>()
    );

    let (got, _, _) = list_v2(&c, "bkt", Some("d3/"), None, Some(100), Some("d3/f01000")).await;
    assert_eq!(
        got,
        want.iter()
            .filter(|k| k.starts_with("d3/") && k.as_str() > "d3/f01000")
            .cloned()
            .collect::<Vec<_>>()
    );

    let (got, prefixes, _) = list_v2(&c, "bkt", None, Some("/"), Some(3), None).await;
    assert!(got.is_empty());
    assert_eq!(
        prefixes,
        (0..7).map(|i| format!("d{i}/")).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_objects_v1_marker_and_next_marker() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let mut keys: Vec<String> = (0..40).map(|i| format!("k{i:03}")).collect();
    keys.extend((0..10).map(|i| format!("sub{i}/x")));
    keys.push("sub3/y".into());
    put_many(&c, "bkt", &keys, 8).await;
    let want = sorted(keys.clone());

    // Without a delimiter: page with marker = last key of the previous page.
    let mut got = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let out = c
            .list_objects()
            .bucket("bkt")
            .max_keys(6)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        assert!(out.contents().len() <= 6);
        got.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
        if out.is_truncated() == Some(true) {
            marker = Some(
                out.next_marker()
                    .map(str::to_string)
                    .unwrap_or_else(|| got.last().unwrap().clone()),
            );
        } else {
            break;
        }
    }
    assert_eq!(got, want);

    // With a delimiter, a truncated page carries NextMarker (S3 returns it then).
    let mut got_keys = Vec::new();
    let mut got_prefixes = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let out = c
            .list_objects()
            .bucket("bkt")
            .delimiter("/")
            .max_keys(4)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        got_keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
        got_prefixes.extend(
            out.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string()),
        );
        if out.is_truncated() == Some(true) {
            let nm = out
                .next_marker()
                .expect("truncated v1 page with a delimiter must carry NextMarker");
            marker = Some(nm.to_string());
        } else {
            break;
        }
    }
    assert_eq!(pages, 50_usize.div_ceil(4));
    assert_eq!(
        got_keys,
        (0..40).map(|i| format!("k{i:03}")).collect::<Vec<_>>()
    );
    assert_eq!(
        got_prefixes,
        (0..10).map(|i| format!("sub{i}/")).collect::<Vec<_>>()
    );

    // marker on its own
    let out = c
        .list_objects()
        .bucket("bkt")
        .marker("k037")
        .send()
        .await
        .unwrap();
    let got: Vec<String> = out
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    assert_eq!(
        got,
        want.iter()
            .filter(|k| k.as_str() > "k037")
            .cloned()
            .collect::<Vec<_>>()
    );
    // v1 with a prefix
    let out = c
        .list_objects()
        .bucket("bkt")
        .prefix("sub3/")
        .send()
        .await
        .unwrap();
    let got: Vec<String> = out
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    assert_eq!(got, vec!["sub3/x", "sub3/y"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_object_versions_shows_current_objects_as_null() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let keys: Vec<String> = ["x", "d/y", "d/z", "w/"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    put_many(&c, "bkt", &keys, 2).await;
    // an overwrite must not create a second version
    c.put_object()
        .bucket("bkt")
        .key("x")
        .body(ByteStream::from_static(b"v2"))
        .send()
        .await
        .unwrap();
    let out = c.list_object_versions().bucket("bkt").send().await.unwrap();
    let got: Vec<String> = out
        .versions()
        .iter()
        .map(|v| v.key().unwrap().to_string())
        .collect();
    assert_eq!(got, sorted(keys));
    for v in out.versions() {
        assert_eq!(v.version_id(), Some("null"), "{v:?}");
        assert_eq!(v.is_latest(), Some(true), "{v:?}");
    }
    assert_eq!(
        out.versions()
            .iter()
            .find(|v| v.key() == Some("x"))
            .unwrap()
            .size(),
        Some(2)
    );
    assert!(out.delete_markers().is_empty());

    let out = c
        .list_object_versions()
        .bucket("bkt")
        .prefix("d/")
        .send()
        .await
        .unwrap();
    let got: Vec<String> = out
        .versions()
        .iter()
        .map(|v| v.key().unwrap().to_string())
        .collect();
    assert_eq!(got, vec!["d/y", "d/z"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_multipart_uploads_shows_in_progress() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("mp/object")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    c.upload_part()
        .bucket("bkt")
        .key("mp/object")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(test_bytes(1000, 1)))
        .send()
        .await
        .unwrap();
    let out = c
        .list_multipart_uploads()
        .bucket("bkt")
        .send()
        .await
        .unwrap();
    let ups: Vec<(String, String)> = out
        .uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap().to_string(),
                u.upload_id().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ups, vec![("mp/object".to_string(), id.clone())]);
    // the upload is not an object
    let (keys, prefixes, _) = list_v2(&c, "bkt", None, None, None, None).await;
    assert!(
        keys.is_empty() && prefixes.is_empty(),
        "{keys:?} {prefixes:?}"
    );
    c.abort_multipart_upload()
        .bucket("bkt")
        .key("mp/object")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let out = c
        .list_multipart_uploads()
        .bucket("bkt")
        .send()
        .await
        .unwrap();
    assert!(out.uploads().is_empty());
}

/// A narrow prefix next to a big sibling directory returns only its own keys.
#[tokio::test(flavor = "multi_thread")]
async fn narrow_prefix_next_to_big_directory() {
    let gw = Gateway::start_with(GatewayOptions {
        no_fsync: true,
        ..Default::default()
    });
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let mut keys: Vec<String> = (0..3000).map(|i| format!("big/{i:05}")).collect();
    keys.push("small/x".into());
    keys.push("smallish".into());
    put_many(&c, "bkt", &keys, 16).await;

    let (got, prefixes, _) = list_v2(&c, "bkt", Some("small/"), None, None, None).await;
    assert_eq!(got, vec!["small/x"]);
    assert!(prefixes.is_empty());
    let (got, prefixes, _) = list_v2(&c, "bkt", Some("small/"), Some("/"), None, None).await;
    assert_eq!(got, vec!["small/x"]);
    assert!(prefixes.is_empty());
    let (got, _, _) = list_v2(&c, "bkt", Some("small"), None, None, None).await;
    assert_eq!(got, vec!["small/x", "smallish"]);
    let (got, prefixes, _) = list_v2(&c, "bkt", None, Some("/"), None, None).await;
    assert_eq!(got, vec!["smallish"]);
    assert_eq!(prefixes, vec!["big/", "small/"]);
    // a late marker in the big directory
    let (got, _, _) = list_v2(&c, "bkt", Some("big/"), None, None, Some("big/02995")).await;
    assert_eq!(
        got,
        vec!["big/02996", "big/02997", "big/02998", "big/02999"]
    );
    let (got, _, _) = list_v2(&c, "bkt", Some("big/"), None, None, None).await;
    assert_eq!(got.len(), 3000);
}

/// A directory marker `dir/` is a key that starts with the prefix `dir/`, so a listing of that
/// prefix includes it (first, since it sorts before everything under it).
#[tokio::test(flavor = "multi_thread")]
async fn marker_is_listed_under_its_own_prefix() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let keys: Vec<String> = ["dir/", "dir/a", "dir/sub/", "dir/sub/b", "dirx"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    put_many(&c, "bkt", &keys, 1).await;
    let (got, prefixes, _) = list_v2(&c, "bkt", None, None, None, None).await;
    assert_eq!(got, keys, "full listing");
    assert!(prefixes.is_empty());
    let (got, _, _) = list_v2(&c, "bkt", Some("dir/"), None, None, None).await;
    assert_eq!(
        got,
        vec!["dir/", "dir/a", "dir/sub/", "dir/sub/b"],
        "prefix dir/"
    );
    let (got, prefixes, _) = list_v2(&c, "bkt", Some("dir/"), Some("/"), None, None).await;
    assert_eq!(got, vec!["dir/", "dir/a"], "prefix dir/ with delimiter");
    assert_eq!(prefixes, vec!["dir/sub/"]);
    let (got, _, _) = list_v2(&c, "bkt", Some("dir/sub/"), None, None, None).await;
    assert_eq!(got, vec!["dir/sub/", "dir/sub/b"], "prefix dir/sub/");
    let (got, _, _) = list_v2(&c, "bkt", Some("dir"), None, None, None).await;
    assert_eq!(got, keys, "prefix dir");
}
