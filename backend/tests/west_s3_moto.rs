//! The `s3` dialect against a third-party S3 server: moto (`python3 -m moto.server`, installed
//! by scripts/test.sh as `moto[server]`). Same behaviours as the gateway tests; gpair-name is a
//! tag, placeholders are zero-byte objects, renames are copies. Nothing is skipped: if moto
//! cannot start, the tests fail and say why.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use gpair_backend::west::keys::west_key;
use gpair_backend::west::s3::{S3West, GPAIR_NAME_TAG};
use gpair_backend::west::{connect, CheckStage, Dialect, GpeerConn, SetAttr, WestStore};

const BUCKET: &str = "west-bucket";

fn conn(endpoint: &str) -> GpeerConn {
    GpeerConn {
        endpoint: endpoint.to_string(),
        access_key: "AKMOTOTEST0000000001".into(),
        secret_key: "moto-secret".into(),
        region: "us-east-1".into(),
        dialect: Dialect::S3,
    }
}

async fn setup() -> (Moto, Arc<dyn WestStore>, S3Below) {
    let moto = Moto::start();
    let store = connect(&conn(&moto.endpoint));
    assert_eq!(store.dialect(), Dialect::S3);
    store.create_bucket(BUCKET).await.unwrap();
    let below = S3Below {
        client: raw_client(&moto.endpoint, "AKMOTOTEST0000000001", "moto-secret"),
        dialect: Dialect::S3,
    };
    (moto, store, below)
}

#[tokio::test(flavor = "multi_thread")]
async fn buckets_and_check() {
    let (moto, store, _) = setup().await;
    buckets(store.as_ref()).await;
    // moto accepts any credentials, so there is no Auth stage to see here (the gateway
    // tests cover it).
    check_stages_common(|ep| connect(&conn(ep)), &moto.endpoint, BUCKET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_of_every_kind() {
    let (_moto, store, _) = setup().await;
    common::entries_of_every_kind(store.as_ref(), BUCKET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_tree() {
    let (_moto, store, _) = setup().await;
    common::deep_tree(store.as_ref(), BUCKET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_and_long_names() {
    let (_moto, store, below) = setup().await;
    awkward_names(store.as_ref(), &below, BUCKET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_rename_with_many_entries() {
    let (_moto, store, _) = setup().await;
    directory_rename(store.as_ref(), BUCKET, 300).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_rename() {
    let (_moto, store, below) = setup().await;
    common::file_rename(store.as_ref(), &below, BUCKET).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn set_attr_ltr_rtl() {
    let (_moto, store, below) = setup().await;
    set_attr_cycle(store.as_ref(), &below, BUCKET).await;
    // gpair-name is the tag, base64url.
    let tags = below
        .client
        .get_object_tagging()
        .bucket(BUCKET)
        .key("attr/data.bin")
        .send()
        .await
        .unwrap();
    let tag = tags
        .tag_set()
        .iter()
        .find(|t| t.key() == GPAIR_NAME_TAG)
        .unwrap();
    assert_eq!(
        gpair_backend::west::s3::decode_tag_value(tag.value()).as_deref(),
        Some(GPAIR)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_objects_are_copied_in_parts() {
    let (moto, _store, below) = setup().await;
    // Threshold 8 MiB, 5 MiB parts: a 12 MiB object is copied in 3 parts.
    let store = S3West::with_copy_limits(&conn(&moto.endpoint), 8 << 20, 5 << 20);
    let data: Vec<u8> = (0..(12u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let m = file(data.len() as u64, 5);
    let from = west_key("big", b"one.bin");
    let to = west_key("big", b"two.bin");
    below.upload(BUCKET, &from, &data, &m, Some(GPAIR)).await;
    store
        .set_attr(BUCKET, &from, SetAttr::LocalToRemote, GPAIR)
        .await
        .unwrap();
    store.rename(BUCKET, &from, &to, false).await.unwrap();
    assert_eq!(below.get_bytes(BUCKET, &from.key).await, None);
    assert_eq!(
        below.get_bytes(BUCKET, &to.key).await.as_deref(),
        Some(data.as_slice())
    );
    let e = store.head(BUCKET, &to, false).await.unwrap().unwrap();
    assert_eq!(
        (e.data_len, e.gpair_name.as_deref()),
        (data.len() as u64, None)
    );
    assert_meta(&e, &m, "after a multipart copy");
    // A metadata update of the stub copies it onto itself, in parts too.
    let mut m2 = m.clone();
    m2.uid = 4242;
    store.put_entry(BUCKET, &to, &m2, GPAIR).await.unwrap();
    let e = store.head(BUCKET, &to, false).await.unwrap().unwrap();
    assert_eq!(e.uid, Some(4242));
    assert_eq!(e.data_len, data.len() as u64);
    assert_eq!(
        below.get_bytes(BUCKET, &to.key).await.as_deref(),
        Some(data.as_slice())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_gone_gives_transient_errors() {
    let (moto, store, _) = setup().await;
    drop(moto);
    unreachable_is_transient(store.as_ref(), BUCKET).await;
    let f = store.check(Some(BUCKET)).await.unwrap_err();
    assert_eq!(f.stage, CheckStage::Connect, "{f}");
}

#[tokio::test(flavor = "multi_thread")]
async fn file_data_up_and_down() {
    let (_moto, store, _) = setup().await;
    data_cycle(store.as_ref(), BUCKET, false).await;
}
