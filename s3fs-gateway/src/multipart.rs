//! Multipart uploads: each upload is a directory under `<root>/.gpair-gateway/multipart/`
//! holding its record (`upload.json`) and its parts (`part-NNNNN`, each with its ETag in an
//! extended attribute). Parts live outside every bucket, so they are never visible as
//! objects. Blocking functions; the S3 layer calls them from `spawn_blocking`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::meta::{now_ns, ObjectMeta};
use crate::store::{Staged, Store};
use crate::xattr;

const RECORD: &str = "upload.json";
const PART_XATTR: &str = "user.s3fs-gateway.part";
/// S3's minimum size of every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_PART_NUMBER: i32 = 10_000;

/// An upload in progress, as persisted in `upload.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    pub v: u8,
    pub bucket: String,
    pub key: String,
    pub initiated_ns: i128,
    /// Content headers, user metadata and gpair-name for the finished object.
    pub template: ObjectMeta,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub number: i32,
    pub etag: String,
    pub size: u64,
    pub modified_ns: i128,
}

fn upload_dir(store: &Store, id: &str) -> Result<PathBuf> {
    // The id comes from the client and becomes a path component: accept only our format.
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(store.multipart_dir().join(id))
    } else {
        Err(Error::NoSuchUpload(id.chars().take(64).collect()))
    }
}

fn part_path(dir: &Path, number: i32) -> PathBuf {
    dir.join(format!("part-{number:05}"))
}

pub fn create(store: &Store, bucket: &str, key: &str, template: ObjectMeta) -> Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = store.multipart_dir().join(&id);
    std::fs::create_dir(&dir)?;
    let upload = Upload {
        v: 1,
        bucket: bucket.into(),
        key: key.into(),
        initiated_ns: now_ns(),
        template,
    };
    let bytes = serde_json::to_vec(&upload).map_err(|e| Error::Io(io::Error::other(e)))?;
    std::fs::write(dir.join(RECORD), bytes)?;
    store.sync_dir(&dir)?;
    store.sync_dir(store.multipart_dir())?;
    Ok(id)
}

/// Loads an upload and checks that it belongs to `bucket`/`key`.
pub fn load(store: &Store, id: &str, bucket: &str, key: &str) -> Result<(PathBuf, Upload)> {
    let dir = upload_dir(store, id)?;
    let upload = read_record(&dir).ok_or_else(|| Error::NoSuchUpload(id.into()))?;
    if upload.bucket != bucket || upload.key != key {
        return Err(Error::NoSuchUpload(id.into()));
    }
    Ok((dir, upload))
}

fn read_record(dir: &Path) -> Option<Upload> {
    let bytes = std::fs::read(dir.join(RECORD)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Moves a finished part into the upload (replacing an earlier part with the same number).
pub fn install_part(
    store: &Store,
    dir: &Path,
    number: i32,
    staged: &mut Staged,
    etag: &str,
) -> Result<()> {
    let part = Part {
        number,
        etag: etag.into(),
        size: staged.written,
        modified_ns: now_ns(),
    };
    let bytes = serde_json::to_vec(&part).map_err(|e| Error::Io(io::Error::other(e)))?;
    xattr::set(&staged.path, PART_XATTR, &bytes)?;
    if store.fsync() {
        staged.file.sync_all()?;
    }
    if !dir.join(RECORD).exists() {
        // Aborted while the part was uploading.
        return Err(Error::NoSuchUpload(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ));
    }
    std::fs::rename(&staged.path, part_path(dir, number))?;
    staged.keep();
    store.sync_dir(dir)?;
    Ok(())
}

pub fn parts(dir: &Path) -> Result<Vec<Part>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("part-") {
            continue;
        }
        if let Some(bytes) = xattr::get(&entry.path(), PART_XATTR)? {
            if let Ok(p) = serde_json::from_slice::<Part>(&bytes) {
                out.push(p);
            }
        }
    }
    out.sort_by_key(|p| p.number);
    Ok(out)
}

pub fn abort(store: &Store, id: &str, bucket: &str, key: &str) -> Result<()> {
    let (dir, _) = load(store, id, bucket, key)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Uploads of `bucket` whose key starts with `prefix`, ordered by key then initiation.
pub fn list(store: &Store, bucket: &str, prefix: &str) -> Result<Vec<(String, Upload)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(store.multipart_dir())? {
        let entry = entry?;
        if let Some(u) = read_record(&entry.path()) {
            if u.bucket == bucket && u.key.starts_with(prefix) {
                out.push((entry.file_name().to_string_lossy().into_owned(), u));
            }
        }
    }
    out.sort_by(|a, b| (&a.1.key, a.1.initiated_ns).cmp(&(&b.1.key, b.1.initiated_ns)));
    Ok(out)
}

/// Removes uploads started more than `max_age` ago; returns how many.
pub fn remove_stale(store: &Store, max_age: Duration) -> Result<usize> {
    let cutoff = now_ns() - max_age.as_nanos() as i128;
    let mut removed = 0;
    for entry in std::fs::read_dir(store.multipart_dir())? {
        let entry = entry?;
        let stale = match read_record(&entry.path()) {
            Some(u) => u.initiated_ns < cutoff,
            // A directory without a readable record is a create that crashed half-way.
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > max_age),
        };
        if stale {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Concatenates the listed parts into a staging file. Checks order, ETags and sizes as S3
/// does; returns the staging file and the multipart ETag (`md5-of-md5s-N`).
pub fn assemble(store: &Store, dir: &Path, listed: &[(i32, String)]) -> Result<(Staged, String)> {
    if listed.is_empty() {
        return Err(Error::S3(s3s::s3_error!(
            MalformedXML,
            "CompleteMultipartUpload lists no parts"
        )));
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(Error::S3(s3s::s3_error!(
            InvalidPartOrder,
            "parts must be listed in ascending order"
        )));
    }
    let have = parts(dir)?;
    let mut chosen = Vec::with_capacity(listed.len());
    for (i, (number, etag)) in listed.iter().enumerate() {
        let part = have.iter().find(|p| p.number == *number).ok_or_else(|| {
            Error::S3(s3s::s3_error!(
                InvalidPart,
                "part {number} was not uploaded"
            ))
        })?;
        if part.etag != etag.trim_matches('"') {
            return Err(Error::S3(s3s::s3_error!(
                InvalidPart,
                "part {number}: ETag {etag} does not match the uploaded part"
            )));
        }
        if i + 1 < listed.len() && part.size < MIN_PART_SIZE {
            return Err(Error::S3(s3s::s3_error!(
                EntityTooSmall,
                "part {number} is {} bytes; every part but the last must be at least {MIN_PART_SIZE}",
                part.size
            )));
        }
        chosen.push(part.clone());
    }
    let mut staged = Staged::create(store, Default::default())?;
    let mut md5_of_md5s = Md5::new();
    for part in &chosen {
        let digest = hex::decode(&part.etag)
            .map_err(|_| Error::Io(io::Error::other("corrupt part ETag")))?;
        md5_of_md5s.update(&digest);
        let mut src = std::fs::File::open(part_path(dir, part.number))?;
        // std::io::copy uses copy_file_range between files: no bytes pass through us.
        let n = io::copy(&mut (&mut src).take(part.size), &mut staged.file)?;
        if n != part.size {
            return Err(Error::Io(io::Error::other(format!(
                "part {} is shorter than recorded",
                part.number
            ))));
        }
        staged.written += n;
    }
    let etag = format!("{}-{}", hex::encode(md5_of_md5s.finalize()), chosen.len());
    Ok((staged, etag))
}

pub fn remove(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
