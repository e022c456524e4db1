//! Access keys and their roles: loading, first-start generation, SigV4 secret lookup and the
//! per-operation role check.
//!
//! Secrets never leave this module except to the SigV4 verifier; they are never logged
//! (`Debug` of [`AccessKey`] redacts them).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};
use serde::{Deserialize, Serialize};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-write, SetAttrObj and rename: the gpair backend.
    Backend,
    /// Read-only: GET, HEAD and listings.
    Reader,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    pub access_key: String,
    pub secret_key: String,
    pub role: Role,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    keys: Vec<AccessKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("credentials file {path}: {message}")]
    Bad { path: PathBuf, message: String },
    #[error(
        "credentials file {path} has mode {mode:o}; it holds secrets and must be readable by its owner only \
         (run: chmod 600 {path})"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("credentials file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The set of keys the gateway accepts.
#[derive(Debug, Clone)]
pub struct Credentials {
    keys: HashMap<String, AccessKey>,
}

/// Result of [`Credentials::load_or_generate`].
pub enum Loaded {
    Existing(Credentials),
    /// A new file was written with this key; print it once.
    Generated(Credentials, AccessKey),
}

impl Credentials {
    pub fn from_keys(keys: Vec<AccessKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|k| (k.access_key.clone(), k))
                .collect(),
        }
    }

    pub fn role_of(&self, access_key: &str) -> Option<Role> {
        self.keys.get(access_key).map(|k| k.role)
    }

    /// Loads the file, or creates it with one generated backend key when it does not exist.
    pub fn load_or_generate(path: &Path) -> Result<Loaded, CredentialsError> {
        let io = |source| CredentialsError::Io {
            path: path.into(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(md) => {
                let mode = md.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(CredentialsError::Permissions {
                        path: path.into(),
                        mode,
                    });
                }
                let text = std::fs::read_to_string(path).map_err(io)?;
                let file: CredentialsFile =
                    toml::from_str(&text).map_err(|e| CredentialsError::Bad {
                        path: path.into(),
                        message: e.to_string(),
                    })?;
                Self::validate(path, &file.keys)?;
                Ok(Loaded::Existing(Self::from_keys(file.keys)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = AccessKey {
                    access_key: random_access_key(),
                    secret_key: random_secret(),
                    role: Role::Backend,
                };
                let file = CredentialsFile {
                    keys: vec![key.clone()],
                };
                let text = toml::to_string(&file).map_err(|e| CredentialsError::Bad {
                    path: path.into(),
                    message: e.to_string(),
                })?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let tmp = path.with_extension("tmp");
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(text.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
                std::fs::rename(&tmp, path).map_err(io)?;
                Ok(Loaded::Generated(Self::from_keys(vec![key.clone()]), key))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn validate(path: &Path, keys: &[AccessKey]) -> Result<(), CredentialsError> {
        let bad = |message: String| CredentialsError::Bad {
            path: path.into(),
            message,
        };
        if keys.is_empty() {
            return Err(bad("no [[keys]] entries".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            if k.access_key.len() < 3 || !k.access_key.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad(format!(
                    "access_key {:?} must be at least 3 letters or digits",
                    k.access_key
                )));
            }
            if k.secret_key.len() < 16 {
                return Err(bad(format!(
                    "secret_key of {} is shorter than 16 characters",
                    k.access_key
                )));
            }
            if !seen.insert(&k.access_key) {
                return Err(bad(format!("access_key {} appears twice", k.access_key)));
            }
        }
        Ok(())
    }
}

fn random_access_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::thread_rng();
    let tail: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("GP{tail}")
}

fn random_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 30] = rand::thread_rng().gen();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[async_trait::async_trait]
impl S3Auth for Credentials {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.keys.get(access_key) {
            Some(k) => Ok(SecretKey::from(k.secret_key.clone())),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// S3 operations a reader key may call.
const READ_OPS: &[&str] = &[
    "GetObject",
    "HeadObject",
    "HeadBucket",
    "ListBuckets",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "ListMultipartUploads",
    "ListParts",
    "GetBucketLocation",
    "GetBucketVersioning",
];

/// Whether the request was signed with SigV2, which this gateway does not accept.
pub fn is_sigv2(headers: &http::HeaderMap, uri: &http::Uri) -> bool {
    let header_v2 = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS "));
    let query_v2 = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.starts_with("AWSAccessKeyId=") || p.starts_with("Signature="))
    });
    header_v2 || query_v2
}

/// The role check of every standard S3 operation.
pub struct RoleAccess {
    pub credentials: Credentials,
}

impl RoleAccess {
    /// Checks that the request is SigV4-signed by a known key holding `needed` (or more).
    pub fn check_key(&self, access_key: Option<&str>, sigv2: bool, needed: Role) -> S3Result<()> {
        if sigv2 {
            return Err(s3_error!(
                AccessDenied,
                "SigV2 is not accepted; sign requests with SigV4"
            ));
        }
        let Some(access_key) = access_key else {
            return Err(s3_error!(
                AccessDenied,
                "anonymous access is not allowed; sign the request"
            ));
        };
        match (self.credentials.role_of(access_key), needed) {
            (Some(Role::Backend), _) | (Some(Role::Reader), Role::Reader) => Ok(()),
            (Some(Role::Reader), Role::Backend) => Err(s3_error!(
                AccessDenied,
                "key {access_key} has the reader role and cannot modify anything"
            )),
            (None, _) => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

#[async_trait::async_trait]
impl S3Access for RoleAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let needed = if READ_OPS.contains(&cx.s3_op().name()) {
            Role::Reader
        } else {
            Role::Backend
        };
        let sigv2 = is_sigv2(cx.headers(), cx.uri());
        self.check_key(
            cx.credentials().map(|c| c.access_key.as_str()),
            sigv2,
            needed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_private_file_once_and_refuses_open_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.toml");
        let Loaded::Generated(creds, key) = Credentials::load_or_generate(&path).unwrap() else {
            panic!("expected a generated key")
        };
        assert_eq!(creds.role_of(&key.access_key), Some(Role::Backend));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            Credentials::load_or_generate(&path).unwrap(),
            Loaded::Existing(_)
        ));
        assert!(!format!("{key:?}").contains(&key.secret_key));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Credentials::load_or_generate(&path).err().unwrap();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn reader_cannot_write_and_sigv2_is_refused() {
        let access = RoleAccess {
            credentials: Credentials::from_keys(vec![
                AccessKey {
                    access_key: "rdr".into(),
                    secret_key: "x".repeat(16),
                    role: Role::Reader,
                },
                AccessKey {
                    access_key: "bk".into(),
                    secret_key: "y".repeat(16),
                    role: Role::Backend,
                },
            ]),
        };
        assert!(access.check_key(Some("rdr"), false, Role::Reader).is_ok());
        assert!(access.check_key(Some("rdr"), false, Role::Backend).is_err());
        assert!(access.check_key(Some("bk"), false, Role::Backend).is_ok());
        assert!(access.check_key(Some("bk"), true, Role::Reader).is_err());
        assert!(access.check_key(None, false, Role::Reader).is_err());
        assert!(access.check_key(Some("who"), false, Role::Reader).is_err());
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("AWS ak:sig"),
        );
        assert!(is_sigv2(&h, &"/b/k".parse().unwrap()));
        assert!(is_sigv2(
            &http::HeaderMap::new(),
            &"/b/k?AWSAccessKeyId=a&Signature=x&Expires=1"
                .parse()
                .unwrap()
        ));
        assert!(!is_sigv2(
            &http::HeaderMap::new(),
            &"/b/k?X-Amz-Signature=x".parse().unwrap()
        ));
    }
}
