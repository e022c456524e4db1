//! The daemon's optional TCP listener: TLS and a bearer token are mandatory; the real CLI
//! reaches it with `--backend https://HOST:PORT`, a CA certificate and the token.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use gpair_tests::{bin_path, Backend};

const TOKEN: &str = "tcp-test-token-0123456789abcdef";

/// A test CA (`ca.pem`) and a server certificate for localhost / 127.0.0.1 signed by it
/// (`cert.pem`, `key.pem`), made with openssl.
fn make_cert(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl is needed to make test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=gpair test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn gpair(url: &str, ca: &Path, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin_path("gpair"));
    cmd.arg("--backend")
        .arg(url)
        .arg("--ca-cert")
        .arg(ca)
        .args(args)
        .env_remove("GPAIR_TOKEN");
    if let Some(t) = token {
        cmd.env("GPAIR_TOKEN", t);
    }
    cmd.output().unwrap()
}

#[test]
fn tcp_listener_needs_tls_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let tcp = format!(
        "\n[tcp]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\ntoken_file = \"{}\"\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display(),
        token_file.display()
    );
    let b = Backend::start("LC_TCP", &tcp);
    let url = format!("https://localhost:{port}");
    let ca = dir.path().join("ca.pem");

    // The right token over TLS works like the socket.
    let out = gpair(&url, &ca, Some(TOKEN), &["--output", "json", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["cluster_id"], "LC_TCP");

    // A wrong token is refused by the daemon; no token is refused by the CLI before sending.
    let out = gpair(
        &url,
        &ca,
        Some("wrong-token-0123456789abcdef0"),
        &["status"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bearer token"), "{err}");
    let out = gpair(&url, &ca, None, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("GPAIR_TOKEN"));

    // Without the CA the server's certificate is not trusted.
    let out = Command::new(bin_path("gpair"))
        .args(["--backend", &url, "status"])
        .env("GPAIR_TOKEN", TOKEN)
        .env_remove("GPAIR_CA_CERT")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an untrusted certificate was accepted"
    );

    // Plain TCP without TLS gets no answer from the API.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plain = rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await;
        match ch {
            Err(_) => false,
            Ok(ch) => gpair_proto::pb::admin_client::AdminClient::new(ch)
                .status(gpair_proto::pb::StatusRequest {})
                .await
                .is_ok(),
        }
    });
    assert!(!plain, "the TCP listener answered without TLS");
    assert!(!b.log().contains(TOKEN), "the token must never be logged");
}

#[test]
fn tcp_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let base = format!(
        "cluster_id = \"LC_1\"\ncatalog = \"{}\"\nsocket = \"{}\"\n",
        dir.path().join("catalog").display(),
        dir.path().join("s.sock").display()
    );
    let cases = [
        (format!("[tcp]\nlisten = \"127.0.0.1:0\"\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\ntoken_file = \"{0}/token\"\n", dir.path().display()), "chmod 600"),
        (format!("[tcp]\nlisten = \"127.0.0.1:0\"\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\n", dir.path().display()), "token_file"),
        (format!("[tcp]\nlisten = \"127.0.0.1:0\"\nkey = \"{0}/key.pem\"\ntoken_file = \"{0}/token\"\n", dir.path().display()), "cert"),
        ("[tcp]\nlisten = \"not-an-address\"\n".to_string(), "not-an-address"),
    ];
    for (tcp, needle) in cases {
        let cfg = dir.path().join("b.toml");
        std::fs::write(&cfg, format!("{base}{tcp}")).unwrap();
        let out = Command::new(bin_path("gpair-backend"))
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {tcp}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
}
