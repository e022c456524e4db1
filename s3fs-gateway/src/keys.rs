//! Object keys → relative paths under a bucket directory.
//!
//! This module owns the rule that nothing a client sends can name a path outside
//! `<root>/<bucket>`: every key is checked component by component before it touches the
//! filesystem. It never touches the filesystem itself.

use std::path::PathBuf;

/// Longest key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest path component the filesystem accepts (NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is {0} bytes long; the limit is {MAX_KEY_BYTES}")]
    TooLong(usize),
    #[error("key must not start with '/'")]
    Absolute,
    #[error("key has an empty path component ('//')")]
    EmptyComponent,
    #[error("key has a '.' or '..' path component")]
    DotComponent,
    #[error("key contains a backslash")]
    Backslash,
    #[error("key contains a NUL or control character")]
    ControlChar,
    #[error(
        "key has a path component of {0} bytes; the filesystem limit is {MAX_COMPONENT_BYTES}"
    )]
    ComponentTooLong(usize),
}

/// A validated object key. `is_dir()` keys end in `/` and name directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    key: String,
}

impl ObjectKey {
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(key.len()));
        }
        if key.starts_with('/') {
            return Err(KeyError::Absolute);
        }
        if key.contains('\\') {
            return Err(KeyError::Backslash);
        }
        if key.chars().any(char::is_control) {
            return Err(KeyError::ControlChar);
        }
        let body = key.strip_suffix('/').unwrap_or(key);
        for component in body.split('/') {
            match component {
                "" => return Err(KeyError::EmptyComponent),
                "." | ".." => return Err(KeyError::DotComponent),
                c if c.len() > MAX_COMPONENT_BYTES => {
                    return Err(KeyError::ComponentTooLong(c.len()))
                }
                _ => {}
            }
        }
        Ok(Self {
            key: key.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// Whether the key names a directory (`dir/`).
    pub fn is_dir(&self) -> bool {
        self.key.ends_with('/')
    }

    /// The path relative to the bucket directory (without a trailing slash).
    pub fn rel_path(&self) -> PathBuf {
        PathBuf::from(self.key.trim_end_matches('/'))
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for k in [
            "a",
            "a/b/c.txt",
            "dir/",
            "a b/ü/€",
            "..a",
            "a..",
            ".hidden",
            "a/.b/c",
        ] {
            assert!(ObjectKey::parse(k).is_ok(), "{k}");
        }
        assert!(ObjectKey::parse("dir/").unwrap().is_dir());
        assert_eq!(
            ObjectKey::parse("a/b/").unwrap().rel_path(),
            PathBuf::from("a/b")
        );
    }

    #[test]
    fn refuses_escapes_and_garbage() {
        let cases = [
            ("", KeyError::Empty),
            ("/etc/passwd", KeyError::Absolute),
            ("a/../../x", KeyError::DotComponent),
            ("..", KeyError::DotComponent),
            ("./a", KeyError::DotComponent),
            ("a/./b", KeyError::DotComponent),
            ("a//b", KeyError::EmptyComponent),
            ("a\\..\\b", KeyError::Backslash),
            ("a\0b", KeyError::ControlChar),
            ("a\nb", KeyError::ControlChar),
            ("a//", KeyError::EmptyComponent),
        ];
        for (k, want) in cases {
            assert_eq!(ObjectKey::parse(k), Err(want), "{k:?}");
        }
        assert_eq!(
            ObjectKey::parse(&"x".repeat(1025)),
            Err(KeyError::TooLong(1025))
        );
        assert_eq!(
            ObjectKey::parse(&"x".repeat(256)),
            Err(KeyError::ComponentTooLong(256))
        );
        assert!(ObjectKey::parse(&format!("{}/{}", "x".repeat(255), "y".repeat(255))).is_ok());
    }
}
