//! s3fs-gateway end to end: process operations (docs/gateway.md: SIGTERM/SIGINT graceful
//! shutdown, restart on the same root, staging emptied at start, crash safety of writes).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use gpair_tests::*;

const MIB: usize = 1 << 20;

fn connect_refused(gw: &Gateway) -> bool {
    TcpStream::connect_timeout(&gw.addr, Duration::from_millis(200)).is_err()
}

/// Reads one HTTP response with a Content-Length body from `s` (headers, body).
fn read_response(s: &mut TcpStream, already: Vec<u8>) -> (String, Vec<u8>) {
    let mut buf = already;
    let mut tmp = vec![0u8; 256 * 1024];
    let split = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut tmp).unwrap();
        assert!(
            n > 0,
            "connection closed after {} of {len} body bytes",
            body.len()
        );
        body.extend_from_slice(&tmp[..n]);
    }
    (head, body)
}

/// A client that half-closes its side after sending a complete request (as `raw_exchange`
/// does) still gets the response: the connection is not dropped on read EOF.
#[test]
fn client_half_close_still_gets_the_response() {
    let gw = Gateway::start();
    let headers = sign_headers(
        gw.addr,
        &gw.backend,
        "GET",
        "/",
        &[],
        b"",
        SystemTime::now(),
    );
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&request_head("GET", "/", &headers)).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "no response after the client's half-close (got {} bytes: {text:?})",
        buf.len()
    );
}

#[test]
fn sigterm_and_sigint_when_idle_exit_zero() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut gw = Gateway::start();
        gw.create_bucket("bkt");
        assert_eq!(gw.put_raw("bkt", "k", &[], b"x").status, 200);
        let st = gw
            .signal_and_wait(sig, Duration::from_secs(20))
            .expect("gateway did not exit on the signal");
        assert!(st.success(), "signal {sig}: exit status {st:?}");
        assert!(connect_refused(&gw), "still accepting after exit");
        assert!(!gw.log().contains("panicked"));
    }
}

/// SIGTERM during a slow GET of a large object: the listener closes, the GET completes with
/// every byte, then the process exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_get_finish() {
    let mut gw = Gateway::start_with(GatewayOptions {
        no_fsync: true,
        ..Default::default()
    });
    gw.create_bucket("bkt");
    let data = test_bytes(64 * MIB, 42);
    let c = gw.client(&gw.backend);
    c.put_object()
        .bucket("bkt")
        .key("large")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();

    let headers = sign_headers(
        gw.addr,
        &gw.backend,
        "GET",
        "/bkt/large",
        &[],
        b"",
        SystemTime::now(),
    );
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&request_head("GET", "/bkt/large", &headers))
        .unwrap();
    // Read a little, so the response is under way and the rest is still to come.
    let mut first = vec![0u8; 64 * 1024];
    let n = s.read(&mut first).unwrap();
    first.truncate(n);
    assert!(n > 0);

    gw.send_signal(libc::SIGTERM);
    assert!(
        poll_until(Duration::from_secs(20), || connect_refused(&gw)),
        "the listener is still open 20 s after SIGTERM"
    );
    std::thread::sleep(Duration::from_millis(200));
    let (head, body) = read_response(&mut s, first);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), data.len(), "in-flight GET cut short");
    assert!(body == data, "in-flight GET bytes differ");
    let st = gw
        .wait_exit(Duration::from_secs(40))
        .expect("gateway did not exit after the GET finished");
    assert!(st.success(), "{st:?}");
}

/// SIGTERM during a slow PUT: the PUT completes and is stored whole.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_put_finish() {
    let mut gw = Gateway::start();
    gw.create_bucket("bkt");
    let data = test_bytes(64 * MIB, 43);
    let len = data.len().to_string();
    let headers = sign_headers_unsigned(
        gw.addr,
        &gw.backend,
        "PUT",
        "/bkt/uploaded",
        &[("content-length", &len)],
        SystemTime::now(),
    );
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&request_head("PUT", "/bkt/uploaded", &headers))
        .unwrap();
    s.write_all(&data[..8 * MIB]).unwrap();
    gw.send_signal(libc::SIGTERM);
    assert!(
        poll_until(Duration::from_secs(20), || connect_refused(&gw)),
        "the listener is still open 20 s after SIGTERM"
    );
    for chunk in data[8 * MIB..].chunks(MIB) {
        s.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let (head, body) = read_response(&mut s, Vec::new());
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{head}\n{}",
        String::from_utf8_lossy(&body)
    );
    let st = gw
        .wait_exit(Duration::from_secs(40))
        .expect("gateway did not exit");
    assert!(st.success(), "{st:?}");
    assert_eq!(std::fs::read(gw.root.join("bkt/uploaded")).unwrap(), data);

    gw.start_again();
    let g = gw.get_raw("bkt", "uploaded", &[]);
    assert_eq!(g.status, 200);
    assert!(g.body == data);
    assert_eq!(
        g.header("etag"),
        Some(format!("\"{}\"", md5_hex(&data)).as_str())
    );
}

/// A crash in the middle of a PUT leaves no object and no staging file after the next start.
#[test]
fn crash_during_put_leaves_nothing() {
    let mut gw = Gateway::start();
    gw.create_bucket("bkt");
    assert_eq!(gw.put_raw("bkt", "victim", &[], b"old version").status, 200);
    let data = test_bytes(16 * MIB, 44);
    let len = data.len().to_string();
    for key in ["victim", "fresh"] {
        let path = format!("/bkt/{key}");
        let headers = sign_headers_unsigned(
            gw.addr,
            &gw.backend,
            "PUT",
            &path,
            &[("content-length", &len)],
            SystemTime::now(),
        );
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(&request_head("PUT", &path, &headers)).unwrap();
        s.write_all(&data[..8 * MIB]).unwrap();
        // Give the gateway time to start staging, then crash it.
        let tmp = gw.root.join(".gpair-gateway/tmp");
        poll_until(Duration::from_secs(10), || !files_in(&tmp).is_empty());
        gw.kill();
        drop(s);
        // Junk in staging from the crash (or planted) is removed at start.
        std::fs::write(tmp.join("planted-junk"), b"junk").unwrap();
        gw.start_again();
        assert!(
            files_in(&tmp).is_empty(),
            "staging not emptied at start: {:?}",
            files_in(&tmp)
        );
    }
    assert_eq!(
        gw.get_raw("bkt", "victim", &[]).body,
        b"old version",
        "torn overwrite"
    );
    assert_eq!(gw.head_raw("bkt", "fresh").status, 404);
    assert!(!gw.root.join("bkt/fresh").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_serves_the_same_objects() {
    let mut gw = Gateway::start();
    let c = gw.client(&gw.backend);
    c.create_bucket().bucket("bkt").send().await.unwrap();
    c.create_bucket().bucket("other").send().await.unwrap();
    c.put_object()
        .bucket("bkt")
        .key("plain")
        .body(ByteStream::from(test_bytes(10_000, 1)))
        .metadata("k", "v")
        .content_type("text/x-plain")
        .send()
        .await
        .unwrap();
    c.put_object()
        .bucket("bkt")
        .key("d/")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .unwrap();
    c.put_object()
        .bucket("bkt")
        .key("d/e/f")
        .body(ByteStream::from_static(b"deep"))
        .send()
        .await
        .unwrap();
    c.put_object()
        .bucket("other")
        .key("x")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("mp")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let parts = [test_bytes(5 * MIB, 2), test_bytes(100, 3)];
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let out = c
            .upload_part()
            .bucket("bkt")
            .key("mp")
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
    c.complete_multipart_upload()
        .bucket("bkt")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // An upload still in progress survives a restart too.
    let pending = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("pending")
        .send()
        .await
        .unwrap();
    let pending_id = pending.upload_id().unwrap().to_string();
    c.upload_part()
        .bucket("bkt")
        .key("pending")
        .upload_id(&pending_id)
        .part_number(1)
        .body(ByteStream::from_static(b"p1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        gw.put_raw(
            "bkt",
            "placeholder",
            &[
                ("x-gpair-name", "A,/a,B,b/a"),
                ("x-amz-meta-gpair-size", "999")
            ],
            b""
        )
        .status,
        200
    );

    let keys = ["plain", "d/", "d/e/f", "mp", "placeholder"];
    let snap = |gw: &Gateway| -> Vec<(u16, Vec<Option<String>>, Vec<u8>)> {
        keys.iter()
            .map(|k| {
                let r = gw.get_raw("bkt", k, &[]);
                let headers = [
                    "etag",
                    "last-modified",
                    "content-type",
                    "x-amz-meta-k",
                    "x-gpair-name",
                ]
                .iter()
                .map(|h| r.header(h).map(str::to_string))
                .collect();
                (r.status, headers, r.body)
            })
            .collect()
    };
    let before = snap(&gw);
    assert!(
        before.iter().all(|s| s.0 == 200),
        "{:?}",
        before.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    let list_before = gw
        .signed(&gw.backend, "GET", "/bkt?list-type=2", &[], b"")
        .body_str();
    let buckets_before = gw.signed(&gw.backend, "GET", "/", &[], b"").body_str();
    let usage_before = gw.usage("bkt");

    gw.restart();
    let c = gw.client(&gw.backend);
    assert_eq!(snap(&gw), before, "objects differ after restart");
    assert_eq!(
        gw.signed(&gw.backend, "GET", "/bkt?list-type=2", &[], b"")
            .body_str(),
        list_before
    );
    assert_eq!(
        gw.signed(&gw.backend, "GET", "/", &[], b"").body_str(),
        buckets_before
    );
    assert_eq!(gw.usage("bkt"), usage_before);
    let ups = c
        .list_multipart_uploads()
        .bucket("bkt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ups.uploads()
            .iter()
            .map(|u| u.upload_id().unwrap())
            .collect::<Vec<_>>(),
        vec![pending_id.as_str()]
    );
    let lp = c
        .list_parts()
        .bucket("bkt")
        .key("pending")
        .upload_id(&pending_id)
        .send()
        .await
        .unwrap();
    assert_eq!(lp.parts().len(), 1);
    let st = gw
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(40))
        .expect("no exit");
    assert!(st.success());
}
