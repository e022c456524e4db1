//! Gateway configuration: the raw TOML file, merged with command-line flags, validated into
//! [`Config`]. Every field of [`RawConfig`] is documented in `deploy/s3fs-gateway.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The config file as written by the admin. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Directory served as S3: one subdirectory per bucket.
    pub root: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:9000).
    pub listen: Option<String>,
    /// Credentials file (default `<root>/.gpair-gateway/credentials.toml`).
    pub credentials: Option<PathBuf>,
    /// Region reported by GetBucketLocation and expected in signatures (default us-east-1).
    pub region: Option<String>,
    /// fsync data and directories before acknowledging a write (default true).
    pub fsync: Option<bool>,
    /// Age after which an unfinished multipart upload is removed (default 86400 s).
    pub multipart_stale_after_secs: Option<u64>,
    /// How often stale multipart uploads are looked for (default 3600 s).
    pub multipart_cleanup_interval_secs: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM (default 30).
    pub shutdown_grace_secs: Option<u64>,
    #[serde(default)]
    pub limits: RawLimits,
    /// Per-bucket quotas, keyed by bucket name.
    #[serde(default)]
    pub quota: BTreeMap<String, RawQuota>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest XML request body (DeleteObjects, CompleteMultipartUpload), default 2 MiB;
    /// 1 KiB..=256 MiB.
    pub max_xml_body_bytes: Option<usize>,
    /// Largest request head (request line + headers), default 64 KiB; 8 KiB..=1 MiB.
    pub max_header_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub max_bytes: Option<u64>,
    pub max_objects: Option<u64>,
}

/// Flags given on the command line; they override the file.
#[derive(Debug, Default)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub listen: Option<String>,
    pub credentials: Option<PathBuf>,
    pub no_fsync: bool,
}

/// Validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub credentials: PathBuf,
    pub region: String,
    pub fsync: bool,
    pub multipart_stale_after: Duration,
    pub multipart_cleanup_interval: Duration,
    pub shutdown_grace: Duration,
    pub max_xml_body_bytes: usize,
    pub max_header_bytes: usize,
    pub quotas: BTreeMap<String, Quota>,
}

/// Limits of one bucket; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub max_bytes: Option<u64>,
    pub max_objects: Option<u64>,
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
    #[error("{0}")]
    Invalid(String),
}

/// Largest `limits.max_header_bytes` accepted (1 MiB).
const MAX_HEADER_LIMIT: usize = 1 << 20;
/// Largest `limits.max_xml_body_bytes` accepted (256 MiB).
const MAX_XML_BODY_LIMIT: usize = 256 << 20;

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: toml_error_line(&text, &e),
        })
    }
}

impl Config {
    pub fn build(raw: RawConfig, flags: Overrides) -> Result<Self, ConfigError> {
        let root = flags.root.or(raw.root).ok_or_else(|| {
            ConfigError::Invalid(
                "no root directory: pass --root DIR or set `root` in the config".into(),
            )
        })?;
        if !root.is_dir() {
            return Err(ConfigError::Invalid(format!(
                "root {} is not a directory (create it first)",
                root.display()
            )));
        }
        let root = root
            .canonicalize()
            .map_err(|e| ConfigError::Invalid(format!("root {}: {e}", root.display())))?;
        let listen_str = flags
            .listen
            .or(raw.listen)
            .unwrap_or_else(|| "127.0.0.1:9000".into());
        let listen: SocketAddr = listen_str.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen address {listen_str:?} is not HOST:PORT (e.g. 127.0.0.1:9000)"
            ))
        })?;
        let credentials = flags
            .credentials
            .or(raw.credentials)
            .unwrap_or_else(|| root.join(crate::store::STATE_DIR).join("credentials.toml"));
        let region = raw.region.unwrap_or_else(|| "us-east-1".into());
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ConfigError::Invalid(format!(
                "region {region:?} must be letters, digits and '-'"
            )));
        }
        let positive =
            |name: &str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
                match v.unwrap_or(default) {
                    0 => Err(ConfigError::Invalid(format!(
                        "{name} must be greater than 0"
                    ))),
                    n => Ok(Duration::from_secs(n)),
                }
            };
        let mut quotas = BTreeMap::new();
        for (bucket, q) in raw.quota {
            if !s3s::path::check_bucket_name(&bucket) {
                return Err(ConfigError::Invalid(format!(
                    "[quota.{bucket}]: {bucket:?} is not a valid bucket name"
                )));
            }
            quotas.insert(
                bucket,
                Quota {
                    max_bytes: q.max_bytes,
                    max_objects: q.max_objects,
                },
            );
        }
        let max_header_bytes = raw.limits.max_header_bytes.unwrap_or(64 * 1024);
        // The limits bound the memory a client can make us hold: keep them bounded.
        if !(8192..=MAX_HEADER_LIMIT).contains(&max_header_bytes) {
            return Err(ConfigError::Invalid(format!(
                "limits.max_header_bytes = {max_header_bytes}: must be 8192..={MAX_HEADER_LIMIT}"
            )));
        }
        let max_xml_body_bytes = raw.limits.max_xml_body_bytes.unwrap_or(2 * 1024 * 1024);
        if !(1024..=MAX_XML_BODY_LIMIT).contains(&max_xml_body_bytes) {
            return Err(ConfigError::Invalid(format!(
                "limits.max_xml_body_bytes = {max_xml_body_bytes}: must be 1024..={MAX_XML_BODY_LIMIT}"
            )));
        }
        Ok(Config {
            root,
            listen,
            credentials,
            region,
            fsync: if flags.no_fsync {
                false
            } else {
                raw.fsync.unwrap_or(true)
            },
            multipart_stale_after: positive(
                "multipart_stale_after_secs",
                raw.multipart_stale_after_secs,
                86_400,
            )?,
            multipart_cleanup_interval: positive(
                "multipart_cleanup_interval_secs",
                raw.multipart_cleanup_interval_secs,
                3600,
            )?,
            shutdown_grace: positive("shutdown_grace_secs", raw.shutdown_grace_secs, 30)?,
            max_xml_body_bytes,
            max_header_bytes,
            quotas,
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
        let text = "region = \"a\"\n[limits]\nmax_header_bytes = \"8\"\n";
        let e = toml::from_str::<RawConfig>(text).unwrap_err();
        let line = toml_error_line(text, &e);
        assert!(
            line.starts_with("line 3, column 20: `limits.max_header_bytes`: invalid type"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn flags_override_file_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let raw: RawConfig =
            toml::from_str("listen = \"127.0.0.1:1\"\nfsync = true\n[quota.bkt]\nmax_bytes = 5\n")
                .unwrap();
        let cfg = Config::build(
            raw,
            Overrides {
                root: Some(dir.path().into()),
                listen: Some("127.0.0.1:2".into()),
                no_fsync: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 2);
        assert!(!cfg.fsync);
        assert_eq!(cfg.quotas["bkt"].max_bytes, Some(5));

        let err = toml::from_str::<RawConfig>("fsync = \"yes\"").unwrap_err();
        assert!(err.to_string().contains("fsync"), "{err}");
        let err = toml::from_str::<RawConfig>("fsynk = true").unwrap_err();
        assert!(err.to_string().contains("fsynk"), "{err}");

        let raw: RawConfig = toml::from_str("listen = \"nowhere\"").unwrap();
        let err = Config::build(
            raw,
            Overrides {
                root: Some(dir.path().into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");

        let raw: RawConfig = toml::from_str("[quota.Bad_Name]\nmax_bytes = 1").unwrap();
        let err = Config::build(
            raw,
            Overrides {
                root: Some(dir.path().into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("Bad_Name"), "{err}");

        let err = Config::build(
            RawConfig::default(),
            Overrides {
                root: Some("/nonexistent/x".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x"), "{err}");
    }
}
