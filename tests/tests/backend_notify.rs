//! The change-notification endpoint mount clients will call (`Changes.Notify`), driven by a
//! test client over the daemon's Unix socket. The watcher is off and reconciliation scans
//! are far apart, so only the notification can make a change reach west in time.
#![allow(clippy::unwrap_used)]

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use gpair_proto::pb;
use gpair_tests::{Backend, Gateway};

async fn client(socket: &Path) -> pb::changes_client::ChangesClient<tonic::transport::Channel> {
    let path = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    pb::changes_client::ChangesClient::new(channel)
}

fn change(kind: pb::ChangeKind, path: &Path, new_path: Option<&Path>) -> pb::Change {
    pb::Change {
        kind: kind as i32,
        path: path.as_os_str().as_bytes().to_vec(),
        new_path: new_path
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .unwrap_or_default(),
    }
}

/// Polls the west directory until `pred` holds.
fn wait_for(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn synced(b: &Backend) -> bool {
    let st = b.gpair_json(&["sync", "status", "p1"]);
    st[0]["pending"].as_u64() == Some(0) && st[0]["initial_sync_done"].as_bool() == Some(true)
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_reach_west_without_watcher_or_scan() {
    let gw = Gateway::start();
    std::fs::create_dir_all(gw.root.join("notif")).unwrap();
    let b = Backend::start("LC_111", "watch = false\nreconcile_interval_secs = 3600\n");
    let share = tempfile::tempdir().unwrap();
    let share_path = share.path().canonicalize().unwrap();
    std::fs::write(share_path.join("before"), b"x").unwrap();
    let out = b.gpair(&[
        "gpeer",
        "add",
        "west",
        "--endpoint",
        &gw.endpoint(),
        "--cluster-id",
        "LC_222",
        "--access-key",
        &gw.backend.access_key,
        "--secret-key",
        &gw.backend.secret_key,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = b.gpair(&[
        "bind",
        "p1",
        "--gpeer",
        "west",
        "--local",
        share_path.to_str().unwrap(),
        "--remote",
        "notif/s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the initial sync", || synced(&b));
    let west = gw.root.join("notif/s");
    assert!(west.join("before").exists());

    // Without notifications nothing moves (watcher off, next scan in an hour).
    std::fs::write(share_path.join("quiet"), b"q").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !west.join("quiet").exists(),
        "a change reached west without any notification"
    );

    let mut c = client(&b.socket).await;
    std::fs::create_dir_all(share_path.join("d")).unwrap();
    std::fs::write(share_path.join("d/new"), b"n").unwrap();
    std::fs::rename(share_path.join("before"), share_path.join("after")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let reply = c
        .notify(pb::NotifyRequest {
            client_id: "test-mount".into(),
            changes: vec![
                change(pb::ChangeKind::Create, &share_path.join("quiet"), None),
                change(pb::ChangeKind::Create, &share_path.join("d"), None),
                change(pb::ChangeKind::Create, &share_path.join("d/new"), None),
                change(
                    pb::ChangeKind::Rename,
                    &share_path.join("before"),
                    Some(&share_path.join("after")),
                ),
                change(
                    pb::ChangeKind::Modify,
                    &outside.path().join("elsewhere"),
                    None,
                ),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.accepted, reply.ignored), (4, 1), "{reply:?}");
    wait_for("the notified changes on west", || {
        west.join("quiet").exists()
            && west.join("d/new").exists()
            && west.join("after").exists()
            && !west.join("before").exists()
    });

    std::fs::remove_file(share_path.join("d/new")).unwrap();
    c.notify(pb::NotifyRequest {
        client_id: "test-mount".into(),
        changes: vec![change(
            pb::ChangeKind::Delete,
            &share_path.join("d/new"),
            None,
        )],
    })
    .await
    .unwrap();
    wait_for("the notified delete on west", || {
        !west.join("d/new").exists()
    });

    // Malformed notifications: INVALID_ARGUMENT naming the field, nothing queued.
    let bad = [
        pb::NotifyRequest {
            client_id: "m".into(),
            changes: vec![pb::Change {
                kind: 99,
                path: b"/x".to_vec(),
                new_path: vec![],
            }],
        },
        pb::NotifyRequest {
            client_id: "m".into(),
            changes: vec![change(pb::ChangeKind::Unspecified, Path::new("/x"), None)],
        },
        pb::NotifyRequest {
            client_id: "m".into(),
            changes: vec![change(pb::ChangeKind::Create, Path::new("relative"), None)],
        },
        pb::NotifyRequest {
            client_id: "m".into(),
            changes: vec![change(
                pb::ChangeKind::Create,
                &share_path.join("../escape"),
                None,
            )],
        },
        pb::NotifyRequest {
            client_id: "m".into(),
            changes: vec![change(pb::ChangeKind::Rename, &share_path.join("a"), None)],
        },
        pb::NotifyRequest {
            client_id: "m".into(),
            changes: vec![pb::Change {
                kind: pb::ChangeKind::Create as i32,
                path: b"/a\0b".to_vec(),
                new_path: vec![],
            }],
        },
        pb::NotifyRequest {
            client_id: "m".into(),
            changes: vec![change(pb::ChangeKind::Create, &share_path.join("x"), None); 10_001],
        },
    ];
    for req in bad {
        let err = c.notify(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("changes"),
            "message should name the field: {}",
            err.message()
        );
    }
    assert!(synced(&b), "the daemon still works after bad input");
    assert!(!b.log().contains("panicked"));
}
