//! The gateway's error type and its one mapping to S3 error responses.

use std::io;

use s3s::{S3Error, S3ErrorCode};

use crate::keys::KeyError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    #[error("key {0} does not exist")]
    NoSuchKey(String),
    #[error("multipart upload {0} does not exist (completed, aborted or expired)")]
    NoSuchUpload(String),
    #[error("invalid key: {0}")]
    InvalidKey(#[from] KeyError),
    #[error("{0}")]
    KeyConflict(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    InvalidObjectState(String),
    #[error("{0}")]
    GpairMismatch(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no space left on the west filesystem: {0}")]
    NoSpace(io::Error),
    /// A path vanished while the request worked on it (a concurrent delete or rename).
    #[error("the object or one of its directories vanished during the request: {0}")]
    Vanished(io::Error),
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    S3(S3Error),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Error::NoSpace(e),
            Some(libc::ENOENT | libc::ENOTDIR) => Error::Vanished(e),
            _ => Error::Io(e),
        }
    }
}

impl From<S3Error> for Error {
    fn from(e: S3Error) -> Self {
        Error::S3(e)
    }
}

/// An error with a code S3 does not define, and its HTTP status.
pub fn custom(code: &'static str, status: http::StatusCode, message: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), message);
    e.set_status_code(status);
    e
}

impl From<Error> for S3Error {
    fn from(e: Error) -> Self {
        use http::StatusCode as S;
        let msg = e.to_string();
        match e {
            Error::NoSuchBucket(_) => S3Error::with_message(S3ErrorCode::NoSuchBucket, msg),
            Error::NoSuchKey(_) | Error::Vanished(_) => {
                S3Error::with_message(S3ErrorCode::NoSuchKey, msg)
            }
            Error::NoSuchUpload(_) => S3Error::with_message(S3ErrorCode::NoSuchUpload, msg),
            Error::InvalidKey(KeyError::TooLong(_)) => {
                S3Error::with_message(S3ErrorCode::KeyTooLongError, msg)
            }
            Error::InvalidKey(_) | Error::InvalidArgument(_) => {
                S3Error::with_message(S3ErrorCode::InvalidArgument, msg)
            }
            Error::KeyConflict(_) => custom("KeyConflict", S::CONFLICT, msg),
            Error::QuotaExceeded(_) => custom("QuotaExceeded", S::FORBIDDEN, msg),
            Error::InvalidObjectState(_) => {
                let mut e = S3Error::with_message(S3ErrorCode::InvalidObjectState, msg);
                e.set_status_code(S::CONFLICT);
                e
            }
            Error::GpairMismatch(_) => custom("GpairMismatch", S::CONFLICT, msg),
            Error::NoSpace(_) => custom("InsufficientStorage", S::INSUFFICIENT_STORAGE, msg),
            Error::Io(ref io) => {
                tracing::error!(error = %io, "filesystem error");
                S3Error::with_message(S3ErrorCode::InternalError, msg)
            }
            Error::S3(e) => e,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
