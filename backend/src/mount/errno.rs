//! The one error type of the mount core: the raw errno the underlying filesystem gave (or the
//! one the core chose, documented where it does). The FUSE shell replies with it unchanged.

use std::fmt;
use std::io;

/// A raw `errno` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Self = Self(libc::EPERM);
    pub const ENOENT: Self = Self(libc::ENOENT);
    pub const EIO: Self = Self(libc::EIO);
    pub const EBADF: Self = Self(libc::EBADF);
    pub const EEXIST: Self = Self(libc::EEXIST);
    pub const ENOTDIR: Self = Self(libc::ENOTDIR);
    pub const EISDIR: Self = Self(libc::EISDIR);
    pub const EINVAL: Self = Self(libc::EINVAL);
    pub const ELOOP: Self = Self(libc::ELOOP);
    pub const ENODATA: Self = Self(libc::ENODATA);
    pub const EOPNOTSUPP: Self = Self(libc::EOPNOTSUPP);
    pub const ENOTEMPTY: Self = Self(libc::ENOTEMPTY);
    pub const EXDEV: Self = Self(libc::EXDEV);
    /// [`StubData`](super::StubData): the file is not a stub any more (recalled meanwhile).
    pub const ESTALE: Self = Self(libc::ESTALE);
    pub const ERANGE: Self = Self(libc::ERANGE);

    /// The calling thread's `errno` after a failed call (EIO if, somehow, there is none).
    pub fn last() -> Self {
        Self::from(io::Error::last_os_error())
    }

    /// The raw value, for the reply to the kernel.
    pub fn raw(self) -> i32 {
        self.0
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Self {
        Self(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<Errno> for io::Error {
    fn from(e: Errno) -> Self {
        io::Error::from_raw_os_error(e.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (errno {})",
            io::Error::from_raw_os_error(self.0),
            self.0
        )
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trips_through_io_error_and_names_itself() {
        let e = Errno::from(io::Error::from_raw_os_error(libc::ENOTEMPTY));
        assert_eq!(e, Errno::ENOTEMPTY);
        assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::ENOTEMPTY));
        assert!(e
            .to_string()
            .contains(&format!("errno {}", libc::ENOTEMPTY)));
        // An error without an OS code (one we made ourselves) becomes EIO, never a panic.
        assert_eq!(Errno::from(io::Error::other("x")), Errno::EIO);
    }
}
