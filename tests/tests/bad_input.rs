//! Scenario 7 of the fault suite (SCENARIOS S5–S7): bad input to every surface of the real
//! binaries. Malformed and absurd gRPC messages on the backend's socket, CLI arguments with bad
//! names and sizes, garbage stub records through `state`/`migrate`/`recall`, and config files
//! with wrong types, unknown keys or missing files. Each must end in a clear error (the right
//! gRPC code, one `gpair: ` line, one `error:` line naming the field), never a panic, and
//! nothing half-created or destroyed. (Gateway input, S1–S4, is `gateway_bad_input.rs`;
//! the fsck and mount-read side of garbage stubs is `faults_data.rs`.)
#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::{Buf, BufMut};
use gpair_proto::pb;
use gpair_tests::world::{job_id, world, World};
use gpair_tests::{bin_path, have_fuse, poll_until, test_bytes, Backend};
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// gRPC

async fn channel(socket: &Path) -> tonic::transport::Channel {
    let path = socket.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

/// Sends and receives message bodies as they are: whatever bytes the test chose.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// Calls `/gpair.v1.SERVICE/METHOD` with `body` as the message, byte for byte.
async fn raw_call(
    ch: &tonic::transport::Channel,
    method: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

fn assert_code<T: std::fmt::Debug>(
    what: &str,
    got: Result<T, tonic::Status>,
    codes: &[Code],
    needles: &[&str],
) {
    let st = match got {
        Ok(v) => panic!("{what}: accepted ({v:?}); want one of {codes:?}"),
        Err(st) => st,
    };
    assert!(
        codes.contains(&st.code()),
        "{what}: {:?} {:?}; want one of {codes:?}",
        st.code(),
        st.message()
    );
    assert!(!st.message().is_empty(), "{what}: no message");
    for n in needles {
        assert!(
            st.message().to_lowercase().contains(&n.to_lowercase()),
            "{what}: message {:?} does not mention {n:?}",
            st.message()
        );
    }
    println!("{what} -> {:?}: {}", st.code(), st.message());
}

/// The backend still answers, and its log has no panic.
async fn still_up(b: &Backend, ch: &tonic::transport::Channel, after: &str) {
    let mut admin = pb::admin_client::AdminClient::new(ch.clone());
    admin
        .status(pb::StatusRequest::default())
        .await
        .unwrap_or_else(|e| panic!("after {after}: Status failed: {e}\n{}", b.log()));
    assert!(
        !b.log().contains("panicked"),
        "after {after}: a panic in the backend log:\n{}",
        b.log()
    );
}

/// Bytes that are not a protobuf message of any type: a truncated varint, a field of wire
/// type 7 (does not exist), a length-delimited field longer than the message, a group end
/// without a start, field number 0.
fn not_protobuf() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a truncated varint", vec![0x08, 0xff, 0xff]),
        ("wire type 7", vec![0x0f, 0x01]),
        ("a length past the end", vec![0x0a, 0x7f, b'a']),
        ("a stray group end", vec![0x0c]),
        ("field number 0", vec![0x00, 0x01]),
        ("64 KiB of 0xff", vec![0xff; 65536]),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_bytes_that_are_not_protobuf_are_refused() {
    let b = Backend::start("LC_111", "");
    let ch = channel(&b.socket).await;
    for method in [
        "/gpair.v1.Admin/AddGpeer",
        "/gpair.v1.Admin/Bind",
        "/gpair.v1.Admin/Migrate",
        "/gpair.v1.Admin/Recall",
        "/gpair.v1.Admin/State",
        "/gpair.v1.Admin/SetQuota",
        "/gpair.v1.Admin/GetJob",
        "/gpair.v1.Changes/Notify",
        "/gpair.v1.Mount/OpenSession",
        "/gpair.v1.Mount/ReadGrant",
        "/gpair.v1.Mount/TakeCap",
    ] {
        for (what, body) in not_protobuf() {
            let what = format!("{method} with {what}");
            // Bytes prost cannot parse are INTERNAL with prost's reason, as the gRPC status
            // code table says (and tonic and grpc-go do); bytes that happen to parse are
            // checked like any message, and are INVALID_ARGUMENT for their missing fields.
            match raw_call(&ch, method, body).await {
                Err(st) if st.code() == Code::Internal => {
                    assert!(
                        st.message()
                            .starts_with("failed to decode Protobuf message"),
                        "{what}: {st:?}"
                    );
                    println!("{what} -> {:?}: {}", st.code(), st.message());
                }
                other => assert_code(&what, other, &[Code::InvalidArgument], &[]),
            }
        }
        still_up(&b, &ch, method).await;
    }
    // A message over the size limit is refused before it is decoded.
    let huge = vec![0x0a_u8; 8 << 20];
    assert_code(
        "an 8 MiB Bind",
        raw_call(&ch, "/gpair.v1.Admin/Bind", huge).await,
        &[
            Code::OutOfRange,
            Code::ResourceExhausted,
            Code::InvalidArgument,
        ],
        &[],
    );
    // An unknown method is Unimplemented (tonic says nothing more), not a crash.
    let unknown = raw_call(&ch, "/gpair.v1.Admin/NoSuchMethod", vec![]).await;
    assert_eq!(
        unknown.as_ref().map_err(tonic::Status::code).err(),
        Some(Code::Unimplemented),
        "{unknown:?}"
    );
    still_up(&b, &ch, "the large and unknown calls").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_missing_fields_and_absurd_values_are_invalid_argument() {
    let b = Backend::start("LC_111", "");
    let ch = channel(&b.socket).await;
    let mut admin = pb::admin_client::AdminClient::new(ch.clone());
    let mut mount = pb::mount_client::MountClient::new(ch.clone());
    let mut changes = pb::changes_client::ChangesClient::new(ch.clone());
    let share = tempfile::tempdir().unwrap();
    let share_s = share.path().to_str().unwrap().to_string();
    let long = "n".repeat(1 << 20);
    let invalid = [Code::InvalidArgument];

    // AddGpeer: every field missing, then each one absurd.
    let gpeer = |f: &dyn Fn(&mut pb::AddGpeerRequest)| {
        let mut r = pb::AddGpeerRequest {
            name: "west".into(),
            endpoint: "http://127.0.0.1:9".into(),
            cluster_id: "LC_222".into(),
            access_key: "AK".into(),
            secret_key: "secret".into(),
            no_check: true,
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let cases: Vec<(&str, pb::AddGpeerRequest, &[&str])> = vec![
        ("AddGpeer {}", pb::AddGpeerRequest::default(), &["name"]),
        ("AddGpeer empty name", gpeer(&|r| r.name.clear()), &["name"]),
        (
            "AddGpeer 1 MiB name",
            gpeer(&|r| r.name = long.clone()),
            &["name"],
        ),
        (
            "AddGpeer name with /",
            gpeer(&|r| r.name = "a/b".into()),
            &["name"],
        ),
        (
            "AddGpeer name with NUL",
            gpeer(&|r| r.name = "a\0b".into()),
            &["name"],
        ),
        (
            "AddGpeer endpoint",
            gpeer(&|r| r.endpoint = "not a url".into()),
            &["endpoint"],
        ),
        (
            "AddGpeer cluster id",
            gpeer(&|r| r.cluster_id = "LC 2/..".into()),
            &["cluster"],
        ),
        (
            "AddGpeer dialect 99",
            gpeer(&|r| r.dialect = 99),
            &["dialect"],
        ),
        (
            "AddGpeer no secret",
            gpeer(&|r| r.secret_key.clear()),
            &["secret"],
        ),
    ];
    for (what, req, needles) in cases {
        assert_code(what, admin.add_gpeer(req).await, &invalid, needles);
    }
    still_up(&b, &ch, "AddGpeer").await;

    // Bind: missing and absurd fields.
    let bind = |f: &dyn Fn(&mut pb::BindRequest)| {
        let mut r = pb::BindRequest {
            name: "p1".into(),
            gpeer: "west".into(),
            local_path: share_s.clone(),
            remote: "bucket/prefix".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let cases: Vec<(&str, pb::BindRequest, &[&str])> = vec![
        ("Bind {}", pb::BindRequest::default(), &[]),
        ("Bind empty name", bind(&|r| r.name.clear()), &["name"]),
        (
            "Bind 1 MiB name",
            bind(&|r| r.name = long.clone()),
            &["name"],
        ),
        (
            "Bind relative local",
            bind(&|r| r.local_path = "rel/dir".into()),
            &["absolute"],
        ),
        (
            "Bind bad bucket",
            bind(&|r| r.remote = "Bad_Bucket".into()),
            &["bucket"],
        ),
        (
            "Bind read policy 99",
            bind(&|r| r.read_policy = 99),
            &["policy"],
        ),
        (
            "Bind retain u32::MAX days",
            bind(&|r| r.retain_deleted_days = u32::MAX),
            &["retain"],
        ),
    ];
    for (what, req, needles) in cases {
        assert_code(what, admin.bind(req).await, &invalid, needles);
    }
    assert_code(
        "Bind with an unknown gpeer",
        admin.bind(bind(&|_| {})).await,
        &[Code::NotFound],
        &["west"],
    );
    // The rest of Bind's checks, with a gpeer that exists (never contacted). A local path
    // that does not exist is FAILED_PRECONDITION, as for the CLI.
    admin.add_gpeer(gpeer(&|_| {})).await.unwrap();
    let cases: Vec<(&str, pb::BindRequest, &[&str])> = vec![
        (
            "Bind local with ..",
            bind(&|r| r.local_path = format!("{share_s}/../nope")),
            &[],
        ),
        (
            "Bind local with NUL",
            bind(&|r| r.local_path = format!("{share_s}/a\0b")),
            &[],
        ),
        (
            "Bind remote ../",
            bind(&|r| r.remote = "bucket/../etc".into()),
            &[],
        ),
        (
            "Bind remote with NUL",
            bind(&|r| r.remote = "bucket/a\0b".into()),
            &[],
        ),
        (
            "Bind a 1 MiB prefix",
            bind(&|r| r.remote = format!("bucket/{long}")),
            &[],
        ),
    ];
    for (what, req, needles) in cases {
        assert_code(
            what,
            admin.bind(req).await,
            &[Code::InvalidArgument, Code::FailedPrecondition],
            needles,
        );
    }
    still_up(&b, &ch, "Bind").await;

    // Paths: relative, `..`, NUL, empty, not UTF-8 but unknown, 1 MiB long.
    let paths: Vec<(&str, Vec<u8>)> = vec![
        ("an empty path", vec![]),
        ("a relative path", b"rel/file".to_vec()),
        (
            "a path with ..",
            format!("{share_s}/../etc/passwd").into_bytes(),
        ),
        ("a path with NUL", format!("{share_s}/a\0b").into_bytes()),
        (
            "a 1 MiB path",
            format!("/{}", "p/".repeat(1 << 19)).into_bytes(),
        ),
    ];
    for (what, p) in &paths {
        let r = pb::MigrateRequest {
            paths: vec![p.clone()],
            ..Default::default()
        };
        assert_code(
            &format!("Migrate {what}"),
            admin.migrate(r.clone()).await,
            &invalid,
            &[],
        );
        assert_code(
            &format!("Recall {what}"),
            admin.recall(r).await,
            &invalid,
            &[],
        );
        let r = pb::StateRequest {
            paths: vec![p.clone()],
        };
        assert_code(
            &format!("State {what}"),
            admin.state(r).await,
            &invalid,
            &[],
        );
    }
    assert_code(
        "Migrate without paths",
        admin.migrate(pb::MigrateRequest::default()).await,
        &invalid,
        &["path"],
    );
    // 100000 paths: each is checked (here the first does not exist), nothing runs away.
    assert_code(
        "Migrate of 100000 paths",
        admin
            .migrate(pb::MigrateRequest {
                paths: vec![b"/x".to_vec(); 100_000],
                ..Default::default()
            })
            .await,
        &[
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::OutOfRange,
            Code::NotFound,
        ],
        &[],
    );
    still_up(&b, &ch, "Migrate/Recall/State").await;

    // Ids and sizes near u64::MAX.
    assert_code(
        "GetJob u64::MAX",
        admin
            .get_job(pb::GetJobRequest {
                id: u64::MAX,
                ..Default::default()
            })
            .await,
        &[Code::NotFound, Code::InvalidArgument],
        &[],
    );
    assert_code(
        "SetQuota of no gpair",
        admin
            .set_quota(pb::SetQuotaRequest {
                name: String::new(),
                max_bytes: Some(u64::MAX),
                max_files: Some(u64::MAX),
            })
            .await,
        &invalid,
        &["name"],
    );
    assert_code(
        "SetQuota u64::MAX on an unknown gpair",
        admin
            .set_quota(pb::SetQuotaRequest {
                name: "nope".into(),
                max_bytes: Some(u64::MAX),
                max_files: Some(u64::MAX - 1),
            })
            .await,
        &[Code::NotFound, Code::InvalidArgument],
        &["nope"],
    );
    still_up(&b, &ch, "GetJob/SetQuota").await;

    // Mount clients: relative share, empty session ids, unknown sessions.
    assert_code(
        "OpenSession {}",
        mount.open_session(pb::OpenSessionRequest::default()).await,
        &invalid,
        &[],
    );
    assert_code(
        "OpenSession relative share",
        mount
            .open_session(pb::OpenSessionRequest {
                client: "t".into(),
                share: b"rel".to_vec(),
                mountpoint: b"/mnt".to_vec(),
            })
            .await,
        &invalid,
        &[],
    );
    assert_code(
        "ReadGrant without a session",
        mount
            .read_grant(pb::ReadGrantRequest {
                path: b"/x".to_vec(),
                ..Default::default()
            })
            .await,
        &[
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
        ],
        &[],
    );
    // A heartbeat of a session the backend does not know says so (the mount then opens a
    // new one), whatever the id.
    let beat = mount.heartbeat(pb::SessionRef { id: long.clone() }).await;
    match beat {
        Ok(r) => assert!(!r.into_inner().known, "a 1 MiB session id is known"),
        Err(st) => assert_eq!(st.code(), Code::InvalidArgument, "{st:?}"),
    }
    let notify = changes
        .notify(pb::NotifyRequest {
            client_id: "t".into(),
            changes: vec![pb::Change {
                kind: 99,
                path: b"rel\0".to_vec(),
                new_path: vec![],
            }],
        })
        .await;
    // Changes outside every share are ignored, but a bad kind or path is refused.
    match notify {
        Ok(r) => assert_eq!(r.into_inner().accepted, 0),
        Err(st) => assert_eq!(st.code(), Code::InvalidArgument, "{st:?}"),
    }
    still_up(&b, &ch, "the mount calls").await;
}

/// Policy rules at the edges of their types on a bound gpair, then the calls that compute
/// with them (explain, a dry run and a real run): refused or harmless, never a panic (an
/// overflow in `now - age` would be one in a debug build).
#[tokio::test(flavor = "multi_thread")]
async fn grpc_policy_rules_at_the_limits_do_not_panic() {
    let w = tokio::task::spawn_blocking(|| world("")).await.unwrap();
    let f = w.write("d/file.bin", &test_bytes(10_000, 5));
    let ch = channel(&w.b.socket).await;
    let mut admin = pb::admin_client::AdminClient::new(ch.clone());
    let max = pb::PolicyRules {
        idle_secs: Some(u64::MAX),
        unmodified_secs: Some(u64::MAX),
        min_size: Some(u64::MAX),
        max_size: Some(u64::MAX),
        include: vec!["[".into(), "**/**/**/**/**/**/**/**/**/**".into()],
        exclude: vec!["{".into()],
        owners: vec![u32::MAX],
        min_age_secs: Some(u64::MAX),
        interval_secs: Some(u64::MAX),
        east_soft_limit: Some(u64::MAX),
        max_files_per_sec: Some(u64::MAX),
        max_bytes_per_sec: Some(u64::MAX),
        ..Default::default()
    };
    let zero = pb::PolicyRules {
        idle_secs: Some(0),
        unmodified_secs: Some(0),
        min_size: Some(0),
        max_size: Some(0),
        min_age_secs: Some(0),
        interval_secs: Some(0),
        east_soft_limit: Some(0),
        max_files_per_sec: Some(0),
        max_bytes_per_sec: Some(0),
        ..Default::default()
    };
    let long_glob = pb::PolicyRules {
        idle_secs: Some(1),
        include: vec!["*".repeat(1 << 20)],
        ..Default::default()
    };
    let watermarks = pb::PolicyRules {
        idle_secs: Some(1),
        high_percent: Some(u32::MAX),
        low_percent: Some(u32::MAX - 1),
        ..Default::default()
    };
    for (what, rules) in [
        ("maximal", max),
        ("zero", zero),
        ("a 1 MiB glob", long_glob),
        ("u32::MAX watermarks", watermarks),
    ] {
        let set = admin
            .set_policy(pb::SetPolicyRequest {
                name: "p".into(),
                rules: Some(rules),
                clear: false,
            })
            .await;
        match &set {
            Ok(_) => println!("SetPolicy {what} -> accepted"),
            Err(st) => {
                assert_eq!(st.code(), Code::InvalidArgument, "SetPolicy {what}: {st:?}");
                println!("SetPolicy {what} -> {:?}: {}", st.code(), st.message());
            }
        }
        let explain = admin
            .explain(pb::ExplainRequest {
                path: f.as_os_str().as_bytes().to_vec(),
            })
            .await;
        println!(
            "Explain after {what} -> {:?}",
            explain.as_ref().map(|r| &r.get_ref().verdict)
        );
        for dry_run in [true, false] {
            let run = admin
                .run_policy(pb::RunPolicyRequest {
                    name: "p".into(),
                    dry_run,
                    show: u32::MAX,
                })
                .await;
            if let Err(st) = &run {
                assert!(
                    matches!(st.code(), Code::InvalidArgument | Code::FailedPrecondition),
                    "RunPolicy after {what}: {st:?}"
                );
            }
        }
        still_up(&w.b, &ch, &format!("policy {what}")).await;
    }
    admin
        .set_policy(pb::SetPolicyRequest {
            name: "p".into(),
            rules: None,
            clear: true,
        })
        .await
        .unwrap();
    still_up(&w.b, &ch, "clearing the policy").await;
    tokio::task::spawn_blocking(move || drop(w)).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// CLI

/// Runs `gpair ARGS` (text output) and checks it failed with one `gpair: ` line on stderr
/// naming every needle, or with clap's usage error (exit 2, first line `error: ...`, then
/// its usage hint) for arguments clap itself refuses; returns the error line.
fn refused(w: &World, args: &[&str], needles: &[&str]) -> String {
    let out = w.b.gpair(args);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(
        !out.status.success(),
        "gpair {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = stderr.lines().next().unwrap_or_default().to_string();
    let ours = line.starts_with("gpair: ") && stderr.lines().count() == 1;
    let clap = line.starts_with("error: ") && out.status.code() == Some(2);
    assert!(
        ours || clap,
        "gpair {args:?}: want one stderr line starting with `gpair: `, got {stderr:?}"
    );
    for n in needles {
        assert!(
            line.to_lowercase().contains(&n.to_lowercase()),
            "gpair {args:?}: {line:?} does not mention {n:?}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    println!("gpair {args:?} -> {line}");
    line
}

/// The names in `gpair ls` and `gpeer ls` (their other columns move with the sync).
fn registry(w: &World) -> (Vec<Value>, Vec<Value>) {
    let names = |v: Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].clone())
            .collect()
    };
    (names(w.ok(&["ls"])), names(w.ok(&["gpeer", "ls"])))
}

#[test]
fn cli_bad_names_sizes_and_paths_are_refused_and_create_nothing() {
    let w = world("");
    let before = registry(&w);
    let other = tempfile::tempdir().unwrap();
    let other_s = other.path().to_str().unwrap();
    let long = "n".repeat(300);
    let bind = |name: &str| -> Vec<String> {
        [
            "bind", name, "--gpeer", "west", "--local", other_s, "--remote",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["cold/p2".to_string()])
        .collect()
    };
    for (name, needle) in [("", "name"), ("a/b", "a/b"), (long.as_str(), "name")] {
        let args = bind(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&w, &args, &[needle]);
    }
    refused(
        &w,
        &[
            "bind", "p2", "--gpeer", "nope", "--local", other_s, "--remote", "cold/p2",
        ],
        &["nope"],
    );
    for name in ["", "a/b", long.as_str()] {
        refused(
            &w,
            &[
                "gpeer",
                "add",
                name,
                "--endpoint",
                &w.gw.endpoint(),
                "--cluster-id",
                "LC_333",
                "--access-key",
                "AK",
                "--secret-key",
                "secret",
            ],
            &[],
        );
    }
    refused(&w, &["gpeer", "show", "nope"], &["nope"]);
    refused(&w, &["gpeer", "rm", "nope"], &["nope"]);
    for size in [
        "12QB",
        "-1",
        "",
        "1e9",
        "18446744073709551616",
        "99999999999P",
    ] {
        refused(
            &w,
            &["quota", "set", "p", "--max-bytes", size],
            &["--max-bytes"],
        );
    }
    refused(
        &w,
        &["quota", "set", "p", "--max-files", "-1"],
        &["--max-files"],
    );
    refused(
        &w,
        &["quota", "set", "nope", "--max-bytes", "1G"],
        &["nope"],
    );
    refused(&w, &["migrate", "relative/path"], &[]);
    refused(&w, &["state", ""], &[]);
    refused(&w, &["job", "show", "-1"], &[]);
    refused(&w, &["job", "show", "18446744073709551616"], &[]);
    assert_eq!(
        registry(&w),
        before,
        "a refused command changed gpair ls / gpeer ls"
    );
    let q = w.quota();
    assert_eq!(
        q["max_bytes"], 0,
        "a refused quota set changed the quota: {q:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// Stub records with garbage

fn set_xattr(p: &Path, value: &[u8]) {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new("user.gpair").unwrap();
    // SAFETY: NUL-terminated strings; the value slice lives for the call.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn get_xattr(p: &Path) -> Vec<u8> {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new("user.gpair").unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated strings; the buffer is as long as we say.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(
        n >= 0,
        "getxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    buf
}

/// Runs a job (`migrate` or `recall` of one path, waited for) whatever its end: its report.
fn job_of(w: &World, verb: &str, p: &Path) -> Value {
    let out = w.cli(&[verb, p.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "gpair {verb}: no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    w.wait_job(job_id(&v))
}

#[test]
fn garbage_stub_records_are_reported_and_never_migrated_recalled_or_destroyed() {
    let w = world("");
    let rec = |s: &str| {
        let mut v = vec![1u8];
        v.extend_from_slice(s.as_bytes());
        v
    };
    let junk: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![1]),
        ("unknown format", b"\x07{}".to_vec()),
        ("not json", rec("{not json")),
        (
            "wrong types",
            rec(r#"{"gpair":1,"bucket":[],"key":{},"size":"x"}"#),
        ),
        (
            "empty fields",
            rec(
                r#"{"gpair":"","gpair_value":"","bucket":"","key":"","etag":"","size":0,"mtime_ns":0,"crc32c":0,"offloaded":{"size":0,"mtime_ns":0,"ctime_ns":0},"offloaded_at_ms":0}"#,
            ),
        ),
        (
            "negative size",
            rec(
                r#"{"gpair":"p","gpair_value":"v","bucket":"cold","key":"k","etag":"e","size":-1,"mtime_ns":0,"crc32c":0,"offloaded":{"size":-1,"mtime_ns":0,"ctime_ns":0},"offloaded_at_ms":0}"#,
            ),
        ),
        ("2000 bytes of 0xff", vec![0xff; 2000]),
        ("binary", (0..=255u8).collect()),
    ];
    let mut files = Vec::new();
    for (i, (what, value)) in junk.iter().enumerate() {
        let data = test_bytes(10_000 + i * 1000, 90 + i as u64);
        let p = w.write(&format!("junk/{i}.bin"), &data);
        files.push((*what, p, data, value.clone()));
    }
    w.synced();
    for (_, p, _, value) in &files {
        set_xattr(p, value);
    }
    for (what, p, data, value) in &files {
        let st = w.state(p);
        assert_eq!(st["state"], "conflict", "{what}: {st:#}");
        let detail = st["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("corrupt"), "{what}: {st:#}");
        for verb in ["migrate", "recall"] {
            let job = job_of(&w, verb, p);
            assert_eq!(
                job["state"],
                "failed",
                "{what}: {verb}: {job:#}\n{}",
                w.diagnostics()
            );
            assert!(
                job.to_string().contains("corrupt"),
                "{what}: {verb}: {job:#}"
            );
        }
        // Never destroyed: bytes, size and the record itself as they were.
        assert_eq!(
            &std::fs::read(p).unwrap(),
            data,
            "{what}: the file's bytes changed"
        );
        assert_eq!(&get_xattr(p), value, "{what}: the record was rewritten");
    }
    assert_eq!(w.quota()["used_files"], 0, "{:#}", w.quota());

    // A stub edited behind our back: a valid record whose size and checksum lie.
    let data = test_bytes(300_000, 99);
    let p = w.write("edited.bin", &data);
    w.synced();
    let job = w.ok(&["migrate", "--wait", p.to_str().unwrap()]);
    assert_eq!(job["state"], "done", "{job:#}");
    let good = get_xattr(&p);
    let text = String::from_utf8(good[1..].to_vec()).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["crc32c"] = Value::from(v["crc32c"].as_u64().unwrap() ^ 1);
    let mut edited = vec![1u8];
    edited.extend(serde_json::to_vec(&v).unwrap());
    set_xattr(&p, &edited);
    let job = job_of(&w, "recall", &p);
    assert_eq!(
        job["state"], "failed",
        "a recall with a lying checksum: {job:#}"
    );
    assert_eq!(get_xattr(&p), edited, "the edited stub was rewritten");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), data.len() as u64);
    set_xattr(&p, &good);
    let job = w.ok(&["recall", "--wait", p.to_str().unwrap()]);
    assert_eq!(
        job["state"], "done",
        "recall with the record restored: {job:#}"
    );
    assert_eq!(std::fs::read(&p).unwrap(), data);

    // Through the mount, a file with a garbage record is its own bytes or an error, never
    // zeros.
    if have_fuse() {
        let m = w.mount(&[]);
        for (what, p, data, _) in &files {
            let rel = p.strip_prefix(&w.share).unwrap();
            match std::fs::read(m.path(rel.to_str().unwrap())) {
                Ok(got) => assert!(got == *data, "{what}: read through the mount differs"),
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what}: {e}"),
            }
        }
    } else {
        eprintln!("SKIP mount reads: /dev/fuse is not usable here");
    }
}

// ---------------------------------------------------------------------------------------------
// Config files

/// Runs `BIN ARGS` (the daemon must refuse to start): exit code and stderr.
fn refuse_to_start(bin: &str, args: &[&std::ffi::OsStr]) -> (i32, String) {
    let mut child = Command::new(bin_path(bin))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = poll_until(Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{bin} {args:?} did not exit: it started with a bad config");
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

fn check_refused(bin: &str, what: &str, code: i32, stderr: &str, needles: &[&str]) {
    assert_ne!(code, 0, "{bin} {what}: exit 0");
    assert!(
        !stderr.contains("panicked"),
        "{bin} {what}: panic: {stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("{bin} {what}: no error line in {stderr:?}"));
    for n in needles {
        assert!(
            line.contains(n),
            "{bin} {what}: {line:?} does not name {n:?}"
        );
    }
    println!("{bin} {what} -> {line}");
}

#[test]
fn config_files_with_wrong_types_unknown_keys_or_missing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let catalog = d.join("catalog");
    let socket = d.join("b.sock");
    let base = format!(
        "cluster_id = \"LC_1\"\ncatalog = \"{}\"\nsocket = \"{}\"\n",
        catalog.display(),
        socket.display()
    );
    let backend_cases: Vec<(&str, String, &[&str])> = vec![
        ("a missing file", String::new(), &["does-not-exist"]),
        ("not TOML", "cluster_id = = \"x\"".into(), &["backend.toml"]),
        (
            "a number as cluster_id",
            "cluster_id = 5\n".into(),
            &["cluster_id"],
        ),
        (
            "an unknown key",
            format!("{base}catalgo = \"/x\"\n"),
            &["catalgo"],
        ),
        ("an unknown table", format!("{base}[tierr]\n"), &["tierr"]),
        (
            "a string for workers",
            format!("{base}[sync]\nworkers = \"8\"\n"),
            &["workers"],
        ),
        (
            "negative workers",
            format!("{base}[sync]\nworkers = -1\n"),
            &["workers"],
        ),
        (
            "zero workers",
            format!("{base}[sync]\nworkers = 0\n"),
            &["workers"],
        ),
        (
            "a huge socket_mode",
            format!("{base}socket_mode = 99999\n"),
            &["socket_mode"],
        ),
        (
            "a table for socket",
            "socket = { a = 1 }\n".into(),
            &["socket"],
        ),
        (
            "a bad stub_xattr",
            format!("{base}[tier]\nstub_xattr = \"gpair\"\n"),
            &["stub_xattr"],
        ),
        (
            "a 2^64 part size",
            format!("{base}[tier]\npart_size_mib = 18446744073709551616\n"),
            &["part_size_mib"],
        ),
        (
            "a missing cluster_id",
            format!("catalog = \"{}\"\n", catalog.display()),
            &["cluster_id"],
        ),
        (
            "a huge heartbeat",
            format!("{base}[sessions]\nheartbeat_secs = 18446744073709551615\n"),
            &["heartbeat"],
        ),
        (
            "/dev/zero as the TLS cert",
            format!("{base}[tcp]\nlisten = \"127.0.0.1:0\"\ncert = \"/dev/zero\"\n"),
            &["tcp.cert", "/dev/zero", "regular file"],
        ),
        (
            "a missing TLS cert",
            format!("{base}[tcp]\nlisten = \"127.0.0.1:0\"\ncert = \"/nonexistent/cert.pem\"\n"),
            &["cert"],
        ),
    ];
    for (what, text, needles) in backend_cases {
        let path = if what == "a missing file" {
            d.join("does-not-exist.toml")
        } else {
            let p = d.join("backend.toml");
            std::fs::write(&p, &text).unwrap();
            p
        };
        let (code, stderr) =
            refuse_to_start("gpair-backend", &["--config".as_ref(), path.as_os_str()]);
        check_refused("gpair-backend", what, code, &stderr, needles);
        assert!(!socket.exists(), "{what}: a socket was created");
    }
    assert!(!catalog.exists(), "a refused start created the catalog");

    let root = d.join("west");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(d.join("not-a-dir"), b"a file").unwrap();
    let gateway_cases: Vec<(&str, &str, &[&str])> = vec![
        ("a missing file", "", &["does-not-exist"]),
        ("not TOML", "fsync = = 1", &["gateway.toml"]),
        ("a string for fsync", "fsync = \"yes\"\n", &["fsync"]),
        ("an unknown key", "fsynk = true\n", &["fsynk"]),
        ("a bad listen", "listen = \"nowhere\"\n", &["nowhere"]),
        ("a number for region", "region = 5\n", &["region"]),
        ("a bad region", "region = \"us east/1\"\n", &["region"]),
        (
            "a bad quota bucket",
            "[quota.Bad_Name]\nmax_bytes = 1\n",
            &["Bad_Name"],
        ),
        (
            "a negative quota",
            "[quota.bkt1]\nmax_bytes = -5\n",
            &["max_bytes"],
        ),
        (
            "small header limit",
            "[limits]\nmax_header_bytes = 10\n",
            &["max_header_bytes"],
        ),
        (
            "zero grace",
            "shutdown_grace_secs = 0\n",
            &["shutdown_grace_secs"],
        ),
        (
            "a 2^64 stale age",
            "multipart_stale_after_secs = 18446744073709551616\n",
            &["multipart_stale_after_secs"],
        ),
        (
            "a huge header limit",
            "[limits]\nmax_header_bytes = 9223372036854775807\n",
            &["max_header_bytes"],
        ),
        (
            "a huge XML body limit",
            "[limits]\nmax_xml_body_bytes = 9223372036854775807\n",
            &["max_xml_body_bytes"],
        ),
        (
            "credentials under a regular file",
            "credentials = \"CREDS\"\n",
            &["not-a-dir"],
        ),
    ];
    for (what, text, needles) in gateway_cases {
        let path = if what == "a missing file" {
            d.join("does-not-exist.toml")
        } else {
            let p = d.join("gateway.toml");
            let text = text.replace("CREDS", &d.join("not-a-dir/c.toml").to_string_lossy());
            // A free port unless the case is about `listen` (a --listen flag would win).
            if text.contains("listen") {
                std::fs::write(&p, text).unwrap();
            } else {
                std::fs::write(&p, format!("listen = \"127.0.0.1:0\"\n{text}")).unwrap();
            }
            p
        };
        let (code, stderr) = refuse_to_start(
            "s3fs-gateway",
            &[
                "--root".as_ref(),
                root.as_os_str(),
                "--config".as_ref(),
                path.as_os_str(),
            ],
        );
        check_refused("s3fs-gateway", what, code, &stderr, needles);
    }
}
