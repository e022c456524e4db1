//! Gpeers and gpairs: their persisted records and the rules for adding, binding and removing
//! them. Validation lives here so that every surface (gRPC, config, tests) applies the same
//! rules and names the offending value in its message.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::west::GpeerConn;

pub const GPEER_PREFIX: &[u8] = b"gpeer/";
pub const GPAIR_PREFIX: &[u8] = b"gpair/";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpeerRecord {
    pub name: String,
    pub cluster_id: String,
    pub conn: GpeerConn,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpairState {
    /// Bound; the first walk of the share has not finished.
    InitialSync,
    /// Incremental sync runs.
    Active,
    /// Unbind in progress: work is stopping, records are being removed.
    Unbinding,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpairRecord {
    pub name: String,
    pub gpeer: String,
    /// Absolute, canonical east share path (UTF-8).
    pub local_path: PathBuf,
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing '/'; may be empty.
    pub prefix: String,
    /// `local_cluster_id,local_share_path,remote_cluster_id,remote_share_path`.
    pub gpair_value: String,
    pub state: GpairState,
    pub created_at_ms: i64,
    /// Limits on west usage (`gpair quota set`).
    #[serde(default)]
    pub quota: crate::tier::quota::QuotaLimits,
    /// Days the west data of a deleted offloaded file is kept under `.gpair-trash/` (0 = none).
    #[serde(default)]
    pub retain_deleted_days: u32,
    /// How mounts read this gpair's stubs.
    #[serde(default)]
    pub read_policy: ReadPolicy,
    /// With [`ReadPolicy::Stream`]: recall a stub once it was opened for reading this many
    /// times within an hour through mounts (0 = never).
    #[serde(default)]
    pub recall_after_reads: u32,
    /// The offload policy (`gpair policy set`), if any.
    #[serde(default)]
    pub policy: Option<crate::policy::rules::Rules>,
}

/// How mounts read a gpair's stubs (`gpair bind --read-policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadPolicy {
    /// Read through from west; the file stays a stub.
    #[default]
    Stream,
    /// Read through, and recall the file in the background at its first read.
    Recall,
}

impl GpairRecord {
    /// The canonical gpair value (DESIGN 2).
    pub fn value_for(
        local_cluster: &str,
        local_path: &Path,
        remote_cluster: &str,
        bucket: &str,
        prefix: &str,
    ) -> String {
        let remote = if prefix.is_empty() {
            format!("/{bucket}")
        } else {
            format!("/{bucket}/{prefix}")
        };
        format!(
            "{local_cluster},{},{remote_cluster},{remote}",
            local_path.display()
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("{what} {value:?} must be 1-64 letters, digits, '.', '_' or '-'")]
    Name { what: &'static str, value: String },
    #[error("endpoint {0:?} must be http://HOST[:PORT] or https://HOST[:PORT]")]
    Endpoint(String),
    #[error("{0}")]
    Other(String),
}

pub fn check_name(what: &'static str, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !value.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Invalid::Name {
            what,
            value: value.into(),
        })
    }
}

pub fn check_endpoint(endpoint: &str) -> Result<(), Invalid> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| Invalid::Endpoint(endpoint.into()))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty()
        || rest.contains('/')
        || rest.contains(char::is_whitespace)
        || rest.contains('@')
    {
        return Err(Invalid::Endpoint(endpoint.into()));
    }
    Ok(())
}

/// Longest remote prefix, in bytes.
pub const MAX_REMOTE_PREFIX: usize = 512;

/// Splits `BUCKET[/PREFIX]` and checks both parts.
pub fn parse_remote(remote: &str) -> Result<(String, String), Invalid> {
    let remote = remote.trim_matches('/');
    let (bucket, prefix) = remote.split_once('/').unwrap_or((remote, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !bucket_ok {
        return Err(Invalid::Other(format!(
            "remote bucket {bucket:?} is not a valid S3 bucket name (3-63 lower-case letters, digits, '-' or '.')"
        )));
    }
    let prefix = prefix.trim_matches('/');
    // Every key of the share starts with the prefix, and S3 keys are at most 1024 bytes.
    if prefix.len() > MAX_REMOTE_PREFIX {
        return Err(Invalid::Other(format!(
            "remote prefix is {} bytes; at most {MAX_REMOTE_PREFIX} (west keys are at most 1024)",
            prefix.len()
        )));
    }
    if prefix.split('/').any(|c| c == "." || c == "..")
        || prefix.contains("//")
        || prefix.contains('\\')
        || prefix.chars().any(char::is_control)
    {
        return Err(Invalid::Other(format!(
            "remote prefix {prefix:?} has empty, '.' or '..' components or bad characters"
        )));
    }
    Ok((bucket.into(), prefix.into()))
}

/// Checks that `candidate` neither contains nor lies inside an already bound share.
pub fn check_no_overlap<'a>(
    candidate: &Path,
    bound: impl IntoIterator<Item = (&'a str, &'a Path)>,
) -> Result<(), Invalid> {
    for (name, path) in bound {
        if candidate.starts_with(path) || path.starts_with(candidate) {
            return Err(Invalid::Other(format!(
                "local share {} overlaps gpair {name:?} (share {})",
                candidate.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        assert!(check_name("gpeer name", "LC_222").is_ok());
        assert!(check_name("gpeer name", "a b").is_err());
        assert!(check_name("gpeer name", "").is_err());
        assert!(check_name("gpeer name", &"x".repeat(65)).is_err());
        assert!(check_endpoint("http://127.0.0.1:9000").is_ok());
        assert!(check_endpoint("https://s3.example.com/").is_ok());
        assert!(check_endpoint("ftp://x").is_err());
        assert!(check_endpoint("http://").is_err());
        assert!(check_endpoint("http://h/path").is_err());
        assert_eq!(
            parse_remote("west/a/b").unwrap(),
            ("west".into(), "a/b".into())
        );
        assert_eq!(
            parse_remote("west").unwrap(),
            ("west".into(), String::new())
        );
        assert!(parse_remote("We").is_err());
        assert!(parse_remote("west/../x").is_err());
        assert!(parse_remote(&format!("west/{}", "p".repeat(MAX_REMOTE_PREFIX))).is_ok());
        assert!(parse_remote(&format!("west/{}", "p".repeat(MAX_REMOTE_PREFIX + 1))).is_err());
        let err = check_no_overlap(Path::new("/d/a/b"), [("p1", Path::new("/d/a"))]).unwrap_err();
        assert!(err.to_string().contains("p1"), "{err}");
        assert!(check_no_overlap(Path::new("/d"), [("p1", Path::new("/d/a"))]).is_err());
        assert!(check_no_overlap(Path::new("/d/ab"), [("p1", Path::new("/d/a"))]).is_ok());
        assert_eq!(
            GpairRecord::value_for("LC_1", Path::new("/share"), "LC_2", "west", "s1"),
            "LC_1,/share,LC_2,/west/s1"
        );
    }
}
