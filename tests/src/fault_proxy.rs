//! A TCP proxy between the backend and the gateway that misbehaves on demand, for the fault
//! suite (tests/tests/faults_west.rs, bench/stress-faults.sh).
//!
//! It listens on `127.0.0.1:0` and forwards every connection to one upstream address. The
//! [`FaultMode`] can be switched at any time and applies at once to new *and* open
//! connections (a client's pooled keep-alive connections must not dodge a fault):
//!
//! - [`FaultMode::Pass`]: bytes go through untouched;
//! - [`FaultMode::Close`]: new connections are closed at once; open ones are cut;
//! - [`FaultMode::Hang`]: connections are accepted and requests read, but nothing ever comes
//!   back (a gateway that accepts and never answers); open connections stall;
//! - [`FaultMode::Garbage`]: every request gets an HTTP answer with an odd status code (418,
//!   444, 520, 599…, or a malformed status line) and a junk body; never a 2xx or 3xx, which a
//!   client cannot tell from a real answer; open connections are cut;
//! - [`FaultMode::Delay`]: like pass, with a delay before every forwarded chunk.
//!
//! Only loopback is used. Dropping the proxy stops it and closes every connection.
#![allow(clippy::unwrap_used)] // test harness

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

/// How the proxy treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    Pass,
    Close,
    Hang,
    Garbage,
    Delay(Duration),
}

/// Counters of what the proxy did, for assertions and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub accepted: u64,
    pub forwarded: u64,
    pub closed: u64,
    pub hung: u64,
    pub garbage: u64,
}

struct Shared {
    mode: Mutex<FaultMode>,
    upstream: Mutex<SocketAddr>,
    stop: AtomicBool,
    accepted: AtomicU64,
    forwarded: AtomicU64,
    closed: AtomicU64,
    hung: AtomicU64,
    garbage: AtomicU64,
}

impl Shared {
    fn mode(&self) -> FaultMode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fault proxy.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// How often open connections look at the mode.
const TICK: Duration = Duration::from_millis(50);

/// Statuses of garbage answers: none an S3 server sends for a good request, none a client
/// could mistake for success.
const GARBAGE_STATUSES: &[u16] = &[418, 420, 444, 460, 499, 502, 503, 504, 520, 521, 599];

impl FaultProxy {
    /// Starts a proxy to `upstream` in [`FaultMode::Pass`].
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(FaultMode::Pass),
            upstream: Mutex::new(upstream),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            garbage: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(listener, s));
        FaultProxy { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: FaultMode) {
        *self.shared.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    pub fn mode(&self) -> FaultMode {
        self.shared.mode()
    }

    /// Points new connections at another upstream (a gateway restarted elsewhere).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = upstream;
    }

    pub fn stats(&self) -> ProxyStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.shared;
        ProxyStats {
            accepted: l(&s.accepted),
            forwarded: l(&s.forwarded),
            closed: l(&s.closed),
            hung: l(&s.hung),
            garbage: l(&s.garbage),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let s = Arc::clone(&shared);
        std::thread::spawn(move || serve(client, s));
    }
}

fn serve(client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    match shared.mode() {
        FaultMode::Close => {
            shared.closed.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
        }
        FaultMode::Hang => hang(client, &shared),
        FaultMode::Garbage => garbage(client, &shared),
        FaultMode::Pass | FaultMode::Delay(_) => forward(client, shared),
    }
}

/// Reads and discards whatever comes, answers nothing, until the mode changes or the client
/// gives up; then closes.
fn hang(mut client: TcpStream, shared: &Shared) {
    shared.hung.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 16 << 10];
    while !shared.stop.load(Ordering::SeqCst) && shared.mode() == FaultMode::Hang {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Answers every request with an odd status and a junk body.
fn garbage(mut client: TcpStream, shared: &Shared) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 16 << 10];
    // The request head (the body, if any, is left unread: the answer comes first, as a
    // broken server's would).
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < (64 << 10) {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    shared.garbage.fetch_add(1, Ordering::Relaxed);
    let mut rng = rand::thread_rng();
    let junk: Vec<u8> = (0..rng.gen_range(0..512)).map(|_| rng.gen()).collect();
    let answer = if rng.gen_range(0..8) == 0 {
        // Not even HTTP.
        let mut a = b"HTTP/1.1 ??? \x01\x02garbage\r\n\r\n".to_vec();
        a.extend_from_slice(&junk);
        a
    } else {
        let status = GARBAGE_STATUSES[rng.gen_range(0..GARBAGE_STATUSES.len())];
        let mut a = format!(
            "HTTP/1.1 {status} Whatever\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            junk.len()
        )
        .into_bytes();
        a.extend_from_slice(&junk);
        a
    };
    let _ = client.write_all(&answer);
    let _ = client.shutdown(Shutdown::Both);
}

fn forward(client: TcpStream, shared: Arc<Shared>) {
    let upstream = *shared.upstream.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        // Upstream down: the client sees its connection closed, as it would see a refusal.
        shared.closed.fetch_add(1, Ordering::Relaxed);
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let _ = server.set_nodelay(true);
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let up = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || pump(client, server, &shared))
    };
    pump(s2, c2, &shared);
    let _ = up.join();
}

/// Waits while the mode is Hang (applies a Delay); false when the connection must be cut.
fn hold_for_mode(shared: &Shared) -> bool {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        match shared.mode() {
            FaultMode::Close | FaultMode::Garbage => return false,
            FaultMode::Hang => std::thread::sleep(TICK),
            FaultMode::Delay(d) => {
                std::thread::sleep(d);
                return true;
            }
            FaultMode::Pass => return true,
        }
    }
}

/// Copies `from` → `to` while the mode allows; cuts both on Close/Garbage, stalls on Hang.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match shared.mode() {
            FaultMode::Close | FaultMode::Garbage => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            FaultMode::Hang => {
                // Nothing moves; the connection stays open.
                std::thread::sleep(TICK);
                continue;
            }
            FaultMode::Pass | FaultMode::Delay(_) => {}
        }
        match from.read(&mut buf) {
            Ok(0) => {
                // A half-close: pass it on; the other direction keeps flowing.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                // The mode may have changed while these bytes were on their way: a request
                // sent right after a switch must meet the new mode, not slip through.
                if !hold_for_mode(shared) {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roundtrip(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut c = TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_millis(500)))?;
        c.write_all(msg)?;
        let mut out = vec![0u8; msg.len()];
        c.read_exact(&mut out)?;
        Ok(out)
    }

    #[test]
    fn modes_switch_at_run_time() {
        let p = FaultProxy::start(echo_server());
        assert_eq!(roundtrip(p.addr(), b"hello").unwrap(), b"hello");
        p.set_mode(FaultMode::Hang);
        assert!(
            roundtrip(p.addr(), b"hello").is_err(),
            "hang answers nothing"
        );
        p.set_mode(FaultMode::Close);
        assert!(
            roundtrip(p.addr(), b"hello").is_err(),
            "close answers nothing"
        );
        p.set_mode(FaultMode::Garbage);
        let mut c = TcpStream::connect(p.addr()).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 "), "{answer:?}");
        assert!(!answer.starts_with(b"HTTP/1.1 2"), "never a success");
        p.set_mode(FaultMode::Delay(Duration::from_millis(20)));
        assert_eq!(roundtrip(p.addr(), b"slow").unwrap(), b"slow");
        p.set_mode(FaultMode::Pass);
        assert_eq!(roundtrip(p.addr(), b"again").unwrap(), b"again");
        let st = p.stats();
        assert!(st.hung >= 1 && st.closed >= 1 && st.garbage >= 1, "{st:?}");
    }

    #[test]
    fn open_connections_obey_a_mode_change() {
        let p = FaultProxy::start(echo_server());
        let mut c = TcpStream::connect(p.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c.write_all(b"one").unwrap();
        let mut out = [0u8; 3];
        c.read_exact(&mut out).unwrap();
        p.set_mode(FaultMode::Hang);
        std::thread::sleep(TICK * 3);
        c.write_all(b"two").unwrap();
        assert!(
            c.read_exact(&mut out).is_err(),
            "a pooled connection stalls too"
        );
    }
}
