//! s3fs-gateway end to end: access control and quotas (docs/gateway.md "Access", "Quotas").
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use gpair_tests::*;

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

/// A gateway process started by the test itself (for credential-file scenarios).
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[&str], stderr: &Path) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr)
            .unwrap();
        let mut child = Command::new(bin_path("s3fs-gateway"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines: rx }
    }

    /// Stdout lines up to and including the "listening" line; returns (lines, addr).
    fn wait_listening(&mut self) -> (Vec<String>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("s3fs-gateway listening on http://") {
                        let addr = addr.trim().to_string();
                        lines.push(line);
                        return (lines, addr);
                    }
                    lines.push(line);
                }
                Err(_) => panic!("gateway did not start; stdout so far: {lines:?}"),
            }
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_for(endpoint: &str, key: &Key) -> aws_sdk_s3::Client {
    let creds =
        aws_credential_types::Credentials::from_keys(&key.access_key, &key.secret_key, None);
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// SHA-1 (for a genuinely valid SigV2 signature: the gateway must refuse SigV2 as such, not
/// because the signature is wrong).
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(msg);
    let ih = sha1(&inner);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&ih);
    sha1(&outer)
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn assert_denied(r: &RawResponse, what: &str) {
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (403, Some("AccessDenied")),
        "{what}: {}",
        r.body_str()
    );
}

// ------------------------------------------------------------------------------------------
// Credentials file
// ------------------------------------------------------------------------------------------

#[test]
fn credentials_file_with_loose_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("west");
    std::fs::create_dir_all(&root).unwrap();
    let creds = dir.path().join("loose-credentials.toml");
    std::fs::write(
        &creds,
        "[[keys]]\naccess_key = \"AKLOOSE0000000000001\"\nsecret_key = \"loose-secret-loose-secret-loose-secret0\"\nrole = \"backend\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = dir.path().join("stderr.log");
    let mut p = Proc::spawn(
        &[
            "--root",
            root.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--credentials",
            creds.to_str().unwrap(),
        ],
        &stderr,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        if let Ok(line) = p.lines.try_recv() {
            assert!(
                !line.contains("listening"),
                "gateway started with a 0644 credentials file: {line}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "gateway neither started nor exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "exit status {status:?}");
    let mut out: String = p.lines.try_iter().collect::<Vec<_>>().join("\n");
    out.push_str(&std::fs::read_to_string(&stderr).unwrap());
    assert!(
        out.contains(creds.to_str().unwrap()),
        "message must name the file: {out}"
    );
    assert!(!out.contains("loose-secret"), "secret leaked: {out}");
}

#[test]
fn credentials_generated_at_first_start_and_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("west");
    std::fs::create_dir_all(&root).unwrap();
    let stderr = dir.path().join("stderr.log");
    let args = ["--root", root.to_str().unwrap(), "--listen", "127.0.0.1:0"];

    let mut p = Proc::spawn(&args, &stderr);
    let (lines, addr) = p.wait_listening();
    let file = root.join(".gpair-gateway/credentials.toml");
    let prefix = format!("generated credentials in {}: ", file.display());
    let gen: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("generated credentials in "))
        .collect();
    assert_eq!(gen.len(), 1, "stdout: {lines:?}");
    let rest = gen[0]
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected line {:?} (want prefix {prefix:?})", gen[0]));
    let mut ak = None;
    let mut sk = None;
    let mut role = None;
    for part in rest.split_whitespace() {
        let (k, v) = part.split_once('=').unwrap();
        match k {
            "access_key" => ak = Some(v.to_string()),
            "secret_key" => sk = Some(v.to_string()),
            "role" => role = Some(v.to_string()),
            other => panic!("unexpected field {other}"),
        }
    }
    assert_eq!(role.as_deref(), Some("backend"));
    let key = Key {
        access_key: ak.unwrap(),
        secret_key: sk.unwrap(),
    };
    assert!(key.secret_key.len() >= 20, "secret too short");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "credentials file mode"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&key.access_key) && text.contains(&key.secret_key));

    let endpoint = format!("http://{addr}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = client_for(&endpoint, &key);
        c.create_bucket().bucket("gen").send().await.unwrap();
        c.put_object()
            .bucket("gen")
            .key("k")
            .body(ByteStream::from_static(b"v"))
            .send()
            .await
            .unwrap();
    });
    assert!(p.terminate().success());

    // Second start: nothing generated, nothing printed, the same key works.
    let mut p = Proc::spawn(&args, &stderr);
    let (lines, addr) = p.wait_listening();
    assert!(
        lines.iter().all(|l| !l.contains("generated credentials")),
        "printed again: {lines:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "credentials file rewritten"
    );
    let endpoint = format!("http://{addr}");
    rt.block_on(async {
        let c = client_for(&endpoint, &key);
        let g = c.get_object().bucket("gen").key("k").send().await.unwrap();
        assert_eq!(&g.body.collect().await.unwrap().into_bytes()[..], b"v");
    });
    assert!(p.terminate().success());
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(!log.contains(&key.secret_key), "secret key in the log");
}

// ------------------------------------------------------------------------------------------
// Authentication
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn two_keys_used_at_once() {
    let gw = Gateway::start();
    let cb = gw.client(&gw.backend);
    let cr = gw.client(&gw.reader);
    cb.create_bucket().bucket("bkt").send().await.unwrap();
    cb.put_object()
        .bucket("bkt")
        .key("shared")
        .body(ByteStream::from_static(b"shared"))
        .send()
        .await
        .unwrap();
    let w = {
        let cb = cb.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                cb.put_object()
                    .bucket("bkt")
                    .key(format!("w/{i}"))
                    .body(ByteStream::from(vec![i as u8; 1000]))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let r = {
        let cr = cr.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                let g = cr
                    .get_object()
                    .bucket("bkt")
                    .key("shared")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(&g.body.collect().await.unwrap().into_bytes()[..], b"shared");
                cr.list_objects_v2().bucket("bkt").send().await.unwrap();
            }
        })
    };
    w.await.unwrap();
    r.await.unwrap();
    let out = cr
        .list_objects_v2()
        .bucket("bkt")
        .prefix("w/")
        .send()
        .await
        .unwrap();
    assert_eq!(out.contents().len(), 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn reader_key_is_read_only() {
    let gw = Gateway::start();
    let cb = gw.client(&gw.backend);
    let cr = gw.client(&gw.reader);
    cb.create_bucket().bucket("bkt").send().await.unwrap();
    cb.put_object()
        .bucket("bkt")
        .key("k")
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .unwrap();
    let up = cb
        .create_multipart_upload()
        .bucket("bkt")
        .key("mp")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let p1 = cb
        .upload_part()
        .bucket("bkt")
        .key("mp")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"part"))
        .send()
        .await
        .unwrap();

    // Allowed.
    cr.list_buckets().send().await.unwrap();
    cr.head_bucket().bucket("bkt").send().await.unwrap();
    cr.get_bucket_location().bucket("bkt").send().await.unwrap();
    let out = cr.list_objects_v2().bucket("bkt").send().await.unwrap();
    assert_eq!(out.contents().len(), 1);
    cr.list_objects().bucket("bkt").send().await.unwrap();
    cr.list_object_versions()
        .bucket("bkt")
        .send()
        .await
        .unwrap();
    cr.list_multipart_uploads()
        .bucket("bkt")
        .send()
        .await
        .unwrap();
    cr.list_parts()
        .bucket("bkt")
        .key("mp")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let g = cr.get_object().bucket("bkt").key("k").send().await.unwrap();
    assert_eq!(&g.body.collect().await.unwrap().into_bytes()[..], b"data");
    cr.head_object()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .unwrap();

    // Denied.
    let denied = |what: &str, (status, code): (u16, String)| {
        assert_eq!(
            (status, code.as_str()),
            (403, "AccessDenied"),
            "reader {what}"
        );
    };
    denied(
        "PutObject",
        expect_err(
            cr.put_object()
                .bucket("bkt")
                .key("k")
                .body(ByteStream::from_static(b"evil"))
                .send()
                .await,
        ),
    );
    denied(
        "PutObject new",
        expect_err(
            cr.put_object()
                .bucket("bkt")
                .key("new")
                .body(ByteStream::from_static(b"evil"))
                .send()
                .await,
        ),
    );
    denied(
        "DeleteObject",
        expect_err(cr.delete_object().bucket("bkt").key("k").send().await),
    );
    denied(
        "DeleteObjects",
        expect_err(
            cr.delete_objects()
                .bucket("bkt")
                .delete(
                    Delete::builder()
                        .objects(ObjectIdentifier::builder().key("k").build().unwrap())
                        .build()
                        .unwrap(),
                )
                .send()
                .await,
        ),
    );
    denied(
        "CopyObject",
        expect_err(
            cr.copy_object()
                .bucket("bkt")
                .key("copy")
                .copy_source("bkt/k")
                .send()
                .await,
        ),
    );
    denied(
        "CreateBucket",
        expect_err(cr.create_bucket().bucket("rbk").send().await),
    );
    denied(
        "DeleteBucket",
        expect_err(cr.delete_bucket().bucket("bkt").send().await),
    );
    denied(
        "CreateMultipartUpload",
        expect_err(
            cr.create_multipart_upload()
                .bucket("bkt")
                .key("m2")
                .send()
                .await,
        ),
    );
    denied(
        "UploadPart",
        expect_err(
            cr.upload_part()
                .bucket("bkt")
                .key("mp")
                .upload_id(&id)
                .part_number(2)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await,
        ),
    );
    denied(
        "CompleteMultipartUpload",
        expect_err(
            cr.complete_multipart_upload()
                .bucket("bkt")
                .key("mp")
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .parts(
                            CompletedPart::builder()
                                .part_number(1)
                                .e_tag(p1.e_tag().unwrap())
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await,
        ),
    );
    denied(
        "AbortMultipartUpload",
        expect_err(
            cr.abort_multipart_upload()
                .bucket("bkt")
                .key("mp")
                .upload_id(&id)
                .send()
                .await,
        ),
    );
    let r = gw.signed(
        &gw.reader,
        "POST",
        "/bkt/k?gpair-setattr",
        &[
            ("x-gpair-attr-key", "rtl_remote_to_local"),
            ("x-gpair-attr-value", "A,/a,B,b/a"),
        ],
        b"",
    );
    assert_denied(&r, "setattr");
    let r = gw.signed(
        &gw.reader,
        "POST",
        "/bkt/k?gpair-rename",
        &[("x-gpair-rename-to", "k2")],
        b"",
    );
    assert_denied(&r, "rename");

    // Nothing changed.
    let out = cb.list_objects_v2().bucket("bkt").send().await.unwrap();
    assert_eq!(
        out.contents()
            .iter()
            .map(|o| o.key().unwrap())
            .collect::<Vec<_>>(),
        vec!["k"]
    );
    assert_eq!(std::fs::read(gw.root.join("bkt/k")).unwrap(), b"data");
    assert!(!gw.root.join("rbk").exists());
    let lp = cb
        .list_parts()
        .bucket("bkt")
        .key("mp")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(lp.parts().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_sigv2_and_bad_signatures_are_refused() {
    let gw = Gateway::start();
    gw.create_bucket("bkt");
    assert_eq!(gw.put_raw("bkt", "k", &[], b"secret data").status, 200);

    // Anonymous.
    for (method, path) in [
        ("GET", "/bkt/k"),
        ("HEAD", "/bkt/k"),
        ("GET", "/"),
        ("GET", "/bkt"),
        ("PUT", "/bkt/anon"),
        ("DELETE", "/bkt/k"),
    ] {
        let r = raw_request(
            gw.addr,
            method,
            path,
            &[],
            if method == "PUT" { b"x" } else { b"" },
        );
        assert_eq!(r.status, 403, "anonymous {method} {path}: {}", r.body_str());
        if method != "HEAD" {
            assert_eq!(
                r.s3_code().as_deref(),
                Some("AccessDenied"),
                "anonymous {method} {path}"
            );
            assert!(!r.body_str().contains("secret data"));
        }
    }
    assert!(!gw.root.join("bkt/anon").exists());
    assert!(gw.root.join("bkt/k").exists());

    // A valid SigV2 signature is still refused.
    let date = http_date(SystemTime::now());
    let sts = format!("GET\n\n\n{date}\n/bkt/k");
    let sig = b64(&hmac_sha1(gw.backend.secret_key.as_bytes(), sts.as_bytes()));
    let headers = vec![
        ("date".to_string(), date.clone()),
        (
            "authorization".to_string(),
            format!("AWS {}:{sig}", gw.backend.access_key),
        ),
    ];
    let r = raw_request(gw.addr, "GET", "/bkt/k", &headers, b"");
    assert_denied(&r, "SigV2 header auth");
    let sts = format!("PUT\n\n\n{date}\n/bkt/v2put");
    let sig = b64(&hmac_sha1(gw.backend.secret_key.as_bytes(), sts.as_bytes()));
    let headers = vec![
        ("date".to_string(), date.clone()),
        (
            "authorization".to_string(),
            format!("AWS {}:{sig}", gw.backend.access_key),
        ),
    ];
    let r = raw_request(gw.addr, "PUT", "/bkt/v2put", &headers, b"");
    assert_denied(&r, "SigV2 PUT");
    assert!(!gw.root.join("bkt/v2put").exists());
    // SigV2 presigned query.
    let expires = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let sts = format!("GET\n\n\n{expires}\n/bkt/k");
    let sig = b64(&hmac_sha1(gw.backend.secret_key.as_bytes(), sts.as_bytes()));
    let sig_enc =
        percent_encoding::utf8_percent_encode(&sig, percent_encoding::NON_ALPHANUMERIC).to_string();
    let r = raw_request(
        gw.addr,
        "GET",
        &format!(
            "/bkt/k?AWSAccessKeyId={}&Expires={expires}&Signature={sig_enc}",
            gw.backend.access_key
        ),
        &[],
        b"",
    );
    assert_denied(&r, "SigV2 presigned");

    // Wrong secret.
    let wrong = Key {
        access_key: gw.backend.access_key.clone(),
        secret_key: "not-the-secret-key-at-all-000000000000".into(),
    };
    let r = gw.signed(&wrong, "GET", "/bkt/k", &[], b"");
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (403, Some("SignatureDoesNotMatch")),
        "{}",
        r.body_str()
    );
    let r = gw.signed(&wrong, "PUT", "/bkt/wrong", &[], b"x");
    assert_eq!(r.status, 403);
    assert!(!gw.root.join("bkt/wrong").exists());
    // Unknown access key.
    let unknown = Key {
        access_key: "AKUNKNOWN00000000001".into(),
        secret_key: gw.backend.secret_key.clone(),
    };
    let r = gw.signed(&unknown, "GET", "/bkt/k", &[], b"");
    assert_eq!(r.status, 403, "{}", r.body_str());
    // Tampered: signed for one path, sent for another.
    let headers = sign_headers(
        gw.addr,
        &gw.backend,
        "GET",
        "/bkt/other",
        &[],
        b"",
        SystemTime::now(),
    );
    let r = raw_request(gw.addr, "GET", "/bkt/k", &headers, b"");
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (403, Some("SignatureDoesNotMatch")),
        "{}",
        r.body_str()
    );
    // Tampered body: signed hash of one body, another sent.
    let headers = sign_headers(
        gw.addr,
        &gw.backend,
        "PUT",
        "/bkt/tampered",
        &[],
        b"good",
        SystemTime::now(),
    );
    let r = raw_request(gw.addr, "PUT", "/bkt/tampered", &headers, b"evil");
    assert!(
        (400..500).contains(&r.status),
        "{} {}",
        r.status,
        r.body_str()
    );
    assert!(!gw.root.join("bkt/tampered").exists());

    // Clock skew of 20 minutes, either way.
    for skew in [-1200i64, 1200] {
        let t = if skew < 0 {
            SystemTime::now() - Duration::from_secs(skew.unsigned_abs())
        } else {
            SystemTime::now() + Duration::from_secs(skew as u64)
        };
        let headers = sign_headers(gw.addr, &gw.backend, "GET", "/bkt/k", &[], b"", t);
        let r = raw_request(gw.addr, "GET", "/bkt/k", &headers, b"");
        assert_eq!(
            (r.status, r.s3_code().as_deref()),
            (403, Some("RequestTimeTooSkewed")),
            "skew {skew}: {}",
            r.body_str()
        );
    }
    // 5 minutes is fine.
    let headers = sign_headers(
        gw.addr,
        &gw.backend,
        "GET",
        "/bkt/k",
        &[],
        b"",
        SystemTime::now() - Duration::from_secs(300),
    );
    let r = raw_request(gw.addr, "GET", "/bkt/k", &headers, b"");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(!gw.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_urls() {
    let gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    c.put_object()
        .bucket("bkt")
        .key("p/k")
        .body(ByteStream::from_static(b"presigned!"))
        .send()
        .await
        .unwrap();

    let send = |p: &aws_sdk_s3::presigning::PresignedRequest| {
        let uri: http::Uri = p.uri().parse().unwrap();
        let headers: Vec<(String, String)> = p
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        raw_request(
            gw.addr,
            p.method(),
            uri.path_and_query().unwrap().as_str(),
            &headers,
            b"",
        )
    };

    let p = c
        .get_object()
        .bucket("bkt")
        .key("p/k")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let r = send(&p);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body, b"presigned!");
    // The reader's presigned URL works too.
    let p = gw
        .client(&gw.reader)
        .get_object()
        .bucket("bkt")
        .key("p/k")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    assert_eq!(send(&p).status, 200);

    // A tampered presigned URL.
    let p = c
        .get_object()
        .bucket("bkt")
        .key("p/k")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let uri: http::Uri = p.uri().parse().unwrap();
    let pq = uri
        .path_and_query()
        .unwrap()
        .as_str()
        .replace("/bkt/p/k", "/bkt/p/other");
    let r = raw_request(gw.addr, "GET", &pq, &[], b"");
    assert_eq!(r.status, 403);

    // Expired.
    let p = c
        .get_object()
        .bucket("bkt")
        .key("p/k")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(1)).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = send(&p);
    assert_denied(&r, "expired presigned URL");
    assert!(!r.body_str().contains("presigned!"));
}

// ------------------------------------------------------------------------------------------
// Quotas
// ------------------------------------------------------------------------------------------

fn quota_gateway() -> Gateway {
    Gateway::start_with(GatewayOptions {
        extra_config:
            "[quota.qbk]\nmax_bytes = 1000\nmax_objects = 3\n\n[quota.qmp]\nmax_bytes = 6000000\n"
                .into(),
        ..Default::default()
    })
}

fn assert_quota_exceeded(r: &RawResponse, what: &str) {
    assert_eq!(
        (r.status, r.s3_code().as_deref()),
        (403, Some("QuotaExceeded")),
        "{what}: {}",
        r.body_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_limits_bytes_and_objects_exactly_across_restart() {
    let mut gw = quota_gateway();
    gw.create_bucket("qbk");
    let u = gw.usage("qbk");
    assert_eq!(
        u,
        serde_json::json!({"bucket": "qbk", "bytes": 0, "objects": 0, "max_bytes": 1000, "max_objects": 3})
    );

    // Over the byte limit in one PUT.
    let r = gw.put_raw("qbk", "huge", &[], &test_bytes(1001, 1));
    assert_quota_exceeded(&r, "1001 bytes");
    assert!(
        r.body_str().contains("1000"),
        "message names the maximum: {}",
        r.body_str()
    );
    assert_eq!(gw.head_raw("qbk", "huge").status, 404);
    assert!(!gw.root.join("qbk/huge").exists());

    assert_eq!(gw.put_raw("qbk", "a", &[], &test_bytes(400, 2)).status, 200);
    assert_eq!(
        gw.put_raw("qbk", "kb", &[], &test_bytes(400, 3)).status,
        200
    );
    let r = gw.put_raw("qbk", "c", &[], &test_bytes(300, 4));
    assert_quota_exceeded(&r, "800 + 300 > 1000");
    assert!(!gw.root.join("qbk/c").exists());
    assert_eq!(gw.put_raw("qbk", "c", &[], &test_bytes(100, 4)).status, 200);
    // The fourth object.
    let r = gw.put_raw("qbk", "d", &[], b"x");
    assert_quota_exceeded(&r, "4th object");
    assert!(!gw.root.join("qbk/d").exists());
    // An overwrite counts only the difference: 400 -> 500 makes exactly 1000.
    let r = gw.put_raw("qbk", "a", &[], &test_bytes(500, 5));
    assert_eq!(
        r.status,
        200,
        "overwrite to exactly the limit: {}",
        r.body_str()
    );
    let r = gw.put_raw("qbk", "a", &[], &test_bytes(501, 6));
    assert_quota_exceeded(&r, "overwrite one byte over");
    assert_eq!(
        std::fs::read(gw.root.join("qbk/a")).unwrap(),
        test_bytes(500, 5),
        "old object kept"
    );
    // Shrinking is always fine.
    assert_eq!(gw.put_raw("qbk", "a", &[], &test_bytes(450, 7)).status, 200);
    let u = gw.usage("qbk");
    assert_eq!(u["bytes"], serde_json::json!(950));
    assert_eq!(u["objects"], serde_json::json!(3));

    // CopyObject over quota.
    let r = gw.signed(
        &gw.backend,
        "PUT",
        "/qbk/c",
        &[("x-amz-copy-source", "/qbk/a")],
        b"",
    );
    assert_quota_exceeded(&r, "copy 450 bytes over 100 (950 -> 1300)");
    assert_eq!(
        std::fs::read(gw.root.join("qbk/c")).unwrap(),
        test_bytes(100, 4)
    );
    let r = gw.signed(
        &gw.backend,
        "PUT",
        "/qbk/new",
        &[("x-amz-copy-source", "/qbk/c")],
        b"",
    );
    assert_quota_exceeded(&r, "copy as a 4th object");
    assert!(!gw.root.join("qbk/new").exists());

    // After a delete there is room again.
    assert_eq!(
        gw.signed(&gw.backend, "DELETE", "/qbk/kb", &[], b"").status,
        204
    );
    let u = gw.usage("qbk");
    assert_eq!(
        (u["bytes"].as_u64(), u["objects"].as_u64()),
        (Some(550), Some(2))
    );
    assert_eq!(gw.put_raw("qbk", "d", &[], &test_bytes(300, 8)).status, 200);
    let before = gw.usage("qbk");
    assert_eq!(
        (before["bytes"].as_u64(), before["objects"].as_u64()),
        (Some(850), Some(3))
    );

    // A crash, then a start: usage is recomputed from the tree, exactly.
    gw.kill();
    gw.start_again();
    let after = gw.usage("qbk");
    assert_eq!(after, before, "usage after kill + restart");
    let r = gw.put_raw("qbk", "e", &[], b"1");
    assert_quota_exceeded(&r, "4th object after restart");
    // And after a graceful restart.
    gw.restart();
    assert_eq!(gw.usage("qbk"), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_holds_under_concurrent_writers() {
    let gw = Gateway::start_with(GatewayOptions {
        extra_config: "[quota.qck]\nmax_bytes = 10000\n".into(),
        ..Default::default()
    });
    gw.create_bucket("qck");
    let c = gw.client(&gw.backend);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30 {
        let c = c.clone();
        set.spawn(async move {
            match c
                .put_object()
                .bucket("qck")
                .key(format!("k{i:02}"))
                .body(ByteStream::from(test_bytes(1000, i)))
                .send()
                .await
            {
                Ok(_) => true,
                Err(e) => {
                    let (status, code) = sdk_err(&e);
                    assert_eq!((status, code.as_str()), (403, "QuotaExceeded"), "{e:?}");
                    false
                }
            }
        });
    }
    let mut ok = 0u64;
    while let Some(r) = set.join_next().await {
        ok += u64::from(r.unwrap());
    }
    assert!(
        (1..=10).contains(&ok),
        "{ok} PUTs of 1000 bytes succeeded under max_bytes 10000"
    );
    let u = gw.usage("qck");
    assert_eq!(u["bytes"].as_u64(), Some(ok * 1000), "{u}");
    assert_eq!(u["objects"].as_u64(), Some(ok), "{u}");
    assert_eq!(files_in(&gw.root.join("qck")).len() as u64, ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_multipart_complete_over_limit() {
    let gw = quota_gateway();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("qmp").send().await.unwrap();
    let up = c
        .create_multipart_upload()
        .bucket("qmp")
        .key("big")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let parts = [test_bytes(5 << 20, 1), test_bytes(2 << 20, 2)];
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let out = c
            .upload_part()
            .bucket("qmp")
            .key("big")
            .upload_id(&id)
            .part_number(i as i32 + 1)
            .body(ByteStream::from(p.clone()))
            .send()
            .await
            .unwrap();
        done.push(
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    let (status, code) = expect_err(
        c.complete_multipart_upload()
            .bucket("qmp")
            .key("big")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await,
    );
    assert_eq!((status, code.as_str()), (403, "QuotaExceeded"));
    assert!(!gw.root.join("qmp/big").exists());
    let (status, _) = expect_err(c.head_object().bucket("qmp").key("big").send().await);
    assert_eq!(status, 404);
    let u = gw.usage("qmp");
    assert_eq!(
        (u["bytes"].as_u64(), u["objects"].as_u64()),
        (Some(0), Some(0)),
        "{u}"
    );
}
