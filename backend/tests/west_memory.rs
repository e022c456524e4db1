//! The in-memory west shows the same behaviours as the real servers (the same functions run
//! in west_gateway.rs and west_s3_moto.rs), in both dialects.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use gpair_backend::west::memory::MemoryWest;
use gpair_backend::west::{Dialect, WestStore};

const BUCKET: &str = "west-bucket";

async fn setup(dialect: Dialect) -> (Arc<MemoryWest>, MemBelow) {
    let store = Arc::new(MemoryWest::with_dialect(dialect));
    store.create_bucket(BUCKET).await.unwrap();
    (Arc::clone(&store), MemBelow(store))
}

async fn all_behaviours(dialect: Dialect) {
    let (store, below) = setup(dialect).await;
    assert_eq!(store.dialect(), dialect);
    buckets(store.as_ref()).await;
    entries_of_every_kind(store.as_ref(), BUCKET).await;
    deep_tree(store.as_ref(), BUCKET).await;
    awkward_names(store.as_ref(), &below, BUCKET).await;
    directory_rename(store.as_ref(), BUCKET, 600).await;
    file_rename(store.as_ref(), &below, BUCKET).await;
    set_attr_cycle(store.as_ref(), &below, BUCKET).await;
}

#[tokio::test]
async fn gateway_semantics() {
    all_behaviours(Dialect::Gateway).await;
}

#[tokio::test]
async fn s3_semantics() {
    all_behaviours(Dialect::S3).await;
}

#[tokio::test]
async fn check_names_a_missing_bucket() {
    let (store, _) = setup(Dialect::Gateway).await;
    store.check(Some(BUCKET)).await.unwrap();
    let f = store.check(Some("nope")).await.unwrap_err();
    assert_eq!(f.stage, gpair_backend::west::CheckStage::Bucket);
}
