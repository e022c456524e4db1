//! Daemon configuration: the raw TOML file (every field documented in
//! `deploy/gpair-backend.toml`) validated into [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This (east) cluster's id, the first field of every gpair value, e.g. "LC_111".
    pub cluster_id: Option<String>,
    /// Directory of the RocksDB catalog.
    pub catalog: Option<PathBuf>,
    /// Unix socket of the gRPC API (admin CLI and mount clients).
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket (default 0o600: only the daemon's user).
    pub socket_mode: Option<u32>,
    /// Seconds in-flight work gets to finish after SIGTERM (default 20).
    pub shutdown_grace_secs: Option<u64>,
    #[serde(default)]
    pub sync: RawSync,
    #[serde(default)]
    pub tier: RawTier,
    #[serde(default)]
    pub sessions: RawSessions,
    /// Optional TCP listener; TLS and a bearer token are mandatory on it.
    pub tcp: Option<RawTcp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    /// Address to listen on, e.g. "0.0.0.0:7443".
    pub listen: Option<String>,
    /// PEM certificate chain of the server.
    pub cert: Option<PathBuf>,
    /// PEM private key of the server.
    pub key: Option<PathBuf>,
    /// File holding the bearer token clients must send (mode 0600, at least 16 characters).
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    /// Workers applying west metadata updates (default 16).
    pub workers: Option<usize>,
    /// Threads walking a share during a scan (default 4).
    pub walk_threads: Option<usize>,
    /// Seconds between reconciliation scans of each share (default 600; 0 disables).
    pub reconcile_interval_secs: Option<u64>,
    /// Use inotify to see local changes at once (default true).
    pub watch: Option<bool>,
    /// First retry delay of a failing entry, ms (default 500).
    pub retry_base_ms: Option<u64>,
    /// Longest retry delay of a failing entry, ms (default 300000).
    pub retry_max_ms: Option<u64>,
    /// Longest pause of a gpeer that answers with transient errors, ms (default 30000).
    pub gpeer_backoff_max_ms: Option<u64>,
    /// Send metadata updates to gateway-dialect gpeers in batches (default true).
    pub batch: Option<bool>,
}

/// Mount sessions and caps (DESIGN 6; docs/backend.md "Caps and sessions").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    /// Seconds between a mount's heartbeats (default 5; 1..=60, below the lease).
    pub heartbeat_secs: Option<u64>,
    /// Seconds a mount session lives without a heartbeat before it is evicted: its caps are
    /// dropped and the files it had open for writing are marked dirty (default 30; at least
    /// twice the heartbeat).
    pub lease_secs: Option<u64>,
    /// Seconds after a backend start during which the sessions of the previous run come
    /// back and reclaim their caps; those that do not are evicted (default 45).
    pub reconnect_window_secs: Option<u64>,
    /// Seconds an offload waits for mounts to give write caps back before it defers the
    /// file ("held open for write by ..."; default 10).
    pub revoke_wait_secs: Option<u64>,
}

fn build_sessions(r: RawSessions) -> Result<crate::session::SessionConfig, ConfigError> {
    let d = crate::session::SessionConfig::default();
    let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
    let c = crate::session::SessionConfig {
        heartbeat: secs(r.heartbeat_secs, d.heartbeat),
        lease: secs(r.lease_secs, d.lease),
        reconnect_window: secs(r.reconnect_window_secs, d.reconnect_window),
        revoke_wait: secs(r.revoke_wait_secs, d.revoke_wait),
    };
    let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&c.heartbeat) {
        return invalid("sessions.heartbeat_secs must be 1..=60");
    }
    if c.lease < 2 * c.heartbeat || c.lease > Duration::from_secs(3600) {
        return invalid(
            "sessions.lease_secs must be at least twice sessions.heartbeat_secs and at most 3600",
        );
    }
    if c.reconnect_window < 2 * c.heartbeat || c.reconnect_window > Duration::from_secs(3600) {
        return Err(ConfigError::Invalid(format!(
            "sessions.reconnect_window_secs = {}: give mounts at least two heartbeats ({} s) to \
             come back after a restart, and at most 3600",
            c.reconnect_window.as_secs(),
            2 * c.heartbeat.as_secs()
        )));
    }
    // A mount waits 30 s for the backend's answer to a take of a write cap; an offload must
    // give up waiting for revokes before that, or the mount would take the answer for an
    // unreachable backend.
    if c.revoke_wait > Duration::from_secs(20) {
        return Err(ConfigError::Invalid(format!(
            "sessions.revoke_wait_secs = {}: at most 20 (mounts wait 30 s for a write cap)",
            c.revoke_wait.as_secs()
        )));
    }
    Ok(c)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    /// Extended attribute holding the stub record on east files (default "user.gpair";
    /// "trusted.gpair" hides it from unprivileged users).
    pub stub_xattr: Option<String>,
    /// Files transferred at once, over every job (default 8).
    pub transfers: Option<usize>,
    /// Files at least this large are uploaded in parts, MiB (default 16).
    pub multipart_threshold_mib: Option<u64>,
    /// Size of one upload part and of one recall range, MiB (default 16; 5..=512).
    pub part_size_mib: Option<u64>,
    /// Parts or ranges of one file in flight at once (default 4).
    pub streams_per_file: Option<usize>,
    /// Hours the west data of any deleted offloaded file stays in the bucket's trash before it
    /// is purged (default 24; 0 deletes at once unless the gpair retains deleted data).
    pub deleted_grace_hours: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct TierConfig {
    pub stub_xattr: String,
    pub transfers: usize,
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub streams_per_file: usize,
    pub deleted_grace: Duration,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            stub_xattr: "user.gpair".into(),
            transfers: 8,
            multipart_threshold: 16 << 20,
            part_size: 16 << 20,
            streams_per_file: 4,
            deleted_grace: Duration::from_secs(24 * 3600),
        }
    }
}

fn build_tier(t: RawTier) -> Result<TierConfig, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(m);
    let d = TierConfig::default();
    let stub_xattr = t.stub_xattr.unwrap_or(d.stub_xattr);
    if !(stub_xattr.starts_with("user.") || stub_xattr.starts_with("trusted."))
        || stub_xattr.len() > 200
        || stub_xattr.contains('\0')
    {
        return Err(invalid(format!(
            "tier.stub_xattr {stub_xattr:?} must be a user.* or trusted.* attribute name"
        )));
    }
    let transfers = t.transfers.unwrap_or(d.transfers);
    if !(1..=256).contains(&transfers) {
        return Err(invalid(format!(
            "tier.transfers = {transfers}: must be 1..=256"
        )));
    }
    let part_mib = t.part_size_mib.unwrap_or(d.part_size >> 20);
    if !(5..=512).contains(&part_mib) {
        return Err(invalid(format!(
            "tier.part_size_mib = {part_mib}: must be 5..=512 (S3 parts are at least 5 MiB)"
        )));
    }
    let threshold_mib = t
        .multipart_threshold_mib
        .unwrap_or(d.multipart_threshold >> 20);
    // A file below the threshold is read into memory whole (one per transfer): keep it small.
    if !(5..=256).contains(&threshold_mib) {
        return Err(invalid(format!(
            "tier.multipart_threshold_mib = {threshold_mib}: must be 5..=256 (a smaller file is held in memory while it is uploaded)"
        )));
    }
    let streams = t.streams_per_file.unwrap_or(d.streams_per_file);
    if !(1..=64).contains(&streams) {
        return Err(invalid(format!(
            "tier.streams_per_file = {streams}: must be 1..=64"
        )));
    }
    Ok(TierConfig {
        stub_xattr,
        transfers,
        multipart_threshold: threshold_mib << 20,
        part_size: part_mib << 20,
        streams_per_file: streams,
        deleted_grace: match t.deleted_grace_hours {
            None => d.deleted_grace,
            Some(h) if h <= 24 * 3650 => Duration::from_secs(h * 3600),
            Some(h) => {
                return Err(invalid(format!(
                    "tier.deleted_grace_hours = {h}: at most ten years"
                )))
            }
        },
    })
}

#[derive(Debug, Clone)]
pub struct Config {
    pub cluster_id: String,
    pub catalog: PathBuf,
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub shutdown_grace: Duration,
    pub sync: SyncConfig,
    pub tier: TierConfig,
    pub sessions: crate::session::SessionConfig,
    pub tcp: Option<TcpConfig>,
}

/// The validated TCP listener settings, with the certificate, key and token loaded.
#[derive(Clone)]
pub struct TcpConfig {
    pub listen: std::net::SocketAddr,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub token: String,
}

impl std::fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Largest certificate, key or token file read for the TCP listener.
const MAX_TCP_FILE_BYTES: u64 = 1 << 20;

fn build_tcp(raw: RawTcp) -> Result<TcpConfig, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let invalid = |m: String| ConfigError::Invalid(m);
    let listen_str = raw
        .listen
        .ok_or_else(|| invalid("[tcp] needs `listen` (e.g. \"0.0.0.0:7443\")".into()))?;
    let listen = listen_str
        .parse()
        .map_err(|_| invalid(format!("tcp.listen {listen_str:?} is not HOST:PORT")))?;
    let read = |what: &str, p: Option<PathBuf>| -> Result<(PathBuf, Vec<u8>), ConfigError> {
        let p = p.ok_or_else(|| {
            invalid(format!(
                "[tcp] needs `{what}`: TCP is served only with TLS and a bearer token"
            ))
        })?;
        // A regular file of sane size: `cert = "/dev/zero"` must not read forever.
        let md = std::fs::metadata(&p)
            .map_err(|e| invalid(format!("tcp.{what} {}: {e}", p.display())))?;
        if !md.is_file() || md.len() > MAX_TCP_FILE_BYTES {
            return Err(invalid(format!(
                "tcp.{what} {}: not a regular file of at most {MAX_TCP_FILE_BYTES} bytes",
                p.display()
            )));
        }
        let bytes =
            std::fs::read(&p).map_err(|e| invalid(format!("tcp.{what} {}: {e}", p.display())))?;
        Ok((p, bytes))
    };
    let (_, cert_pem) = read("cert", raw.cert)?;
    let (_, key_pem) = read("key", raw.key)?;
    let (token_path, token) = read("token_file", raw.token_file)?;
    let mode = std::fs::metadata(&token_path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(invalid(format!(
            "tcp.token_file {} has mode {mode:o}; it holds a secret (run: chmod 600 {})",
            token_path.display(),
            token_path.display()
        )));
    }
    let token = String::from_utf8(token)
        .map_err(|_| invalid("tcp.token_file is not UTF-8".into()))?
        .trim()
        .to_string();
    if token.len() < 16 || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "the bearer token must be at least 16 printable ASCII characters".into(),
        ));
    }
    Ok(TcpConfig {
        listen,
        cert_pem,
        key_pem,
        token,
    })
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub workers: usize,
    pub walk_threads: usize,
    pub reconcile_interval: Option<Duration>,
    pub watch: bool,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub gpeer_backoff_max: Duration,
    pub batch: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            workers: 16,
            walk_threads: 4,
            reconcile_interval: Some(Duration::from_secs(600)),
            watch: true,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(300),
            gpeer_backoff_max: Duration::from_secs(30),
            batch: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: toml_error_line(&text, &e),
        })?;
        Self::build(raw)
    }

    pub fn build(raw: RawConfig) -> Result<Self, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let cluster_id = raw
            .cluster_id
            .ok_or_else(|| invalid("`cluster_id` is required (e.g. \"LC_111\")".into()))?;
        if cluster_id.is_empty()
            || cluster_id.len() > 64
            || !cluster_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(format!(
                "cluster_id {cluster_id:?} must be 1-64 letters, digits, '_' or '-'"
            )));
        }
        let catalog = raw
            .catalog
            .ok_or_else(|| invalid("`catalog` (the catalog directory) is required".into()))?;
        let socket = raw
            .socket
            .unwrap_or_else(|| PathBuf::from("/run/gpair/backend.sock"));
        let socket_mode = raw.socket_mode.unwrap_or(0o600);
        if socket_mode > 0o777 {
            return Err(invalid(format!(
                "socket_mode {socket_mode:o} is not a permission mode"
            )));
        }
        let d = SyncConfig::default();
        let s = raw.sync;
        let workers = s.workers.unwrap_or(d.workers);
        if !(1..=1024).contains(&workers) {
            return Err(invalid(format!(
                "sync.workers = {workers}: must be 1..=1024"
            )));
        }
        let walk_threads = s.walk_threads.unwrap_or(d.walk_threads);
        if !(1..=256).contains(&walk_threads) {
            return Err(invalid(format!(
                "sync.walk_threads = {walk_threads}: must be 1..=256"
            )));
        }
        let reconcile_interval = match s.reconcile_interval_secs {
            None => d.reconcile_interval,
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
        };
        let retry_base = Duration::from_millis(s.retry_base_ms.unwrap_or(500).max(1));
        let retry_max = Duration::from_millis(s.retry_max_ms.unwrap_or(300_000));
        if retry_max < retry_base {
            return Err(invalid(
                "sync.retry_max_ms must be at least sync.retry_base_ms".into(),
            ));
        }
        Ok(Self {
            cluster_id,
            catalog,
            socket,
            socket_mode,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs.unwrap_or(20)),
            tcp: raw.tcp.map(build_tcp).transpose()?,
            tier: build_tier(raw.tier)?,
            sessions: build_sessions(raw.sessions)?,
            sync: SyncConfig {
                workers,
                walk_threads,
                reconcile_interval,
                watch: s.watch.unwrap_or(true),
                retry_base,
                retry_max,
                gpeer_backoff_max: Duration::from_millis(
                    s.gpeer_backoff_max_ms.unwrap_or(30_000).max(100),
                ),
                batch: s.batch.unwrap_or(true),
            },
        })
    }
}

/// One line for a TOML error: where, the key it is about, and what is wrong (toml's own text
/// spans several lines and names the key only in its source excerpt).
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => format!("line {line_no}, column {column}: `{t}.{k}`: {message}"),
        (None, Some(k)) => format!("line {line_no}, column {column}: `{k}`: {message}"),
        _ => format!("line {line_no}, column {column}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_are_one_line_naming_the_key() {
        let text = "cluster_id = \"a\"\n[sync]\nworkers = \"8\"\n";
        let e = toml::from_str::<RawConfig>(text).unwrap_err();
        let line = toml_error_line(text, &e);
        assert!(
            line.starts_with("line 3, column 11: `sync.workers`: invalid type"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn session_settings_have_defaults_and_limits() {
        let base = "cluster_id = \"LC_1\"\ncatalog = \"/x\"\n";
        let c = Config::build(toml::from_str(base).unwrap()).unwrap();
        assert_eq!(c.sessions, crate::session::SessionConfig::default());
        let c = Config::build(
            toml::from_str(&format!(
                "{base}[sessions]\nheartbeat_secs = 1\nlease_secs = 3\nreconnect_window_secs = 5\nrevoke_wait_secs = 2"
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.sessions.lease, Duration::from_secs(3));
        assert_eq!(c.sessions.revoke_wait, Duration::from_secs(2));
        let err = Config::build(
            toml::from_str(&format!(
                "{base}[sessions]\nheartbeat_secs = 5\nlease_secs = 6"
            ))
            .unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sessions.lease_secs"), "{err}");
        assert!(toml::from_str::<RawConfig>(&format!("{base}[sessions]\nlease = 3")).is_err());
    }

    #[test]
    fn required_fields_and_bad_values_are_named() {
        let err = Config::build(toml::from_str("catalog = \"/x\"").unwrap()).unwrap_err();
        assert!(err.to_string().contains("cluster_id"), "{err}");
        let err = Config::build(toml::from_str("cluster_id = \"LC 1\"\ncatalog = \"/x\"").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("LC 1"), "{err}");
        let err = Config::build(
            toml::from_str("cluster_id = \"LC_1\"\ncatalog = \"/x\"\n[sync]\nworkers = 0").unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sync.workers"), "{err}");
        assert!(toml::from_str::<RawConfig>("cluster_id = \"a\"\ncatalg = \"/x\"").is_err());
        let c = Config::build(
            toml::from_str(
                "cluster_id = \"LC_1\"\ncatalog = \"/x\"\n[sync]\nreconcile_interval_secs = 0",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.sync.reconcile_interval, None);
        assert_eq!(c.socket_mode, 0o600);
    }
}
