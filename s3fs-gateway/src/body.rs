//! Response bodies read from files in large chunks on the blocking pool, one chunk ahead of
//! the network, so memory per GET is bounded by two chunks whatever the object size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use s3s::stream::{ByteStream, RemainingLength};
use tokio::task::JoinHandle;

use crate::s3impl::IO_CHUNK;

/// Reads exactly `len` bytes at `offset`; a file that got shorter behind our back is an error,
/// never zeros.
pub fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let mut done = 0;
    while done < len {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "object file is shorter than its length",
            ));
        }
        done += n;
    }
    Ok(buf.freeze())
}

pub struct FileStream {
    first: Option<Bytes>,
    file: Option<Arc<File>>,
    /// Next offset to read.
    offset: u64,
    /// Bytes not yet handed out (including `first` and the read in flight).
    remaining: u64,
    /// Bytes not yet requested from the file.
    unrequested: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileStream {
    /// `first` holds the first bytes already read (at `start`); the rest of `len` is read from
    /// `file` on demand.
    pub fn new(first: Bytes, file: Option<File>, start: u64, len: u64) -> Self {
        let got = first.len() as u64;
        let mut s = Self {
            first: (!first.is_empty()).then_some(first),
            file: file.map(Arc::new),
            offset: start + got,
            remaining: len,
            unrequested: len - got.min(len),
            pending: None,
        };
        s.request_next();
        s
    }

    fn request_next(&mut self) {
        if self.pending.is_some() || self.unrequested == 0 {
            return;
        }
        let Some(file) = self.file.clone() else {
            return;
        };
        let n = self.unrequested.min(IO_CHUNK as u64) as usize;
        let offset = self.offset;
        self.offset += n as u64;
        self.unrequested -= n as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            read_at(&file, offset, n)
        }));
    }
}

impl Stream for FileStream {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            self.remaining -= first.len() as u64;
            return Poll::Ready(Some(Ok(first)));
        }
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        self.request_next();
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(Some(Err("object body ended early".into())));
        };
        match Pin::new(pending).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(joined) => {
                self.pending = None;
                match joined {
                    Ok(Ok(bytes)) => {
                        self.remaining -= bytes.len() as u64;
                        // Read the next chunk while this one goes out.
                        self.request_next();
                        Poll::Ready(Some(Ok(bytes)))
                    }
                    Ok(Err(e)) => {
                        self.remaining = 0;
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Err(e) => {
                        self.remaining = 0;
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl ByteStream for FileStream {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(usize::try_from(self.remaining).unwrap_or(usize::MAX))
    }
}

impl Drop for FileStream {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.abort();
        }
    }
}

use std::future::Future;
