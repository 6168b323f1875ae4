//! Where recording ciphertext lives, behind a small trait so an
//! S3-compatible store can replace the local filesystem later.
//!
//! The model is write-once objects named by `/`-separated keys:
//! - [`Storage::create`] starts an object; its [`ObjectWriter`] appends in
//!   order and hands every byte to storage as it is written (no hidden
//!   buffering), so a writer that dies leaves a readable prefix;
//! - until [`ObjectWriter::commit`] the object is *partial*: only
//!   [`Storage::open_partial`] (crash recovery) reads it, and it fails with
//!   [`StorageError::Busy`] while a live writer still holds it;
//! - commit makes the object durable and atomically visible to
//!   [`Storage::open`], replacing any object with the same key.
//!
//! An S3 implementation maps this onto the same shape: a partial object as
//! a sequence of part objects under a spool prefix (readable in order after
//! a crash; S3 cannot read an unfinished multipart upload), commit as a
//! multipart upload or server-side compose into the final key, a lease row
//! or object for `Busy`, range GETs behind the reader's `Seek`.
//!
//! Everything here is blocking I/O: async callers use `spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why a storage operation failed. Messages carry no object contents.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid object key `{0}`")]
    InvalidKey(String),
    #[error("object not found")]
    NotFound,
    #[error("object is held by a live writer")]
    Busy,
    #[error("storage is full: {0}")]
    Full(#[source] io::Error),
    #[error("storage I/O error: {0}")]
    Io(#[source] io::Error),
}

impl From<io::Error> for StorageError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageError::Full(e),
            _ => StorageError::Io(e),
        }
    }
}

/// A readable object: `Seek` lets readers fetch ranges without reading
/// from the start.
pub trait ObjectRead: Read + Seek + Send {}
impl<T: Read + Seek + Send> ObjectRead for T {}

/// Appends to a new object. Dropping it without `commit` or `abort` is
/// what a crash does: the partial object stays for recovery.
pub trait ObjectWriter: Write + Send {
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// Makes the object durable and visible at its key; returns its size.
    fn commit(self: Box<Self>) -> Result<u64, StorageError>;
    /// Throws away what was written.
    fn abort(self: Box<Self>) -> Result<(), StorageError>;
}

/// One object, as [`Storage::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Not committed (being written, or left by a crash).
    pub partial: bool,
}

/// A store of write-once objects (see the module docs for the contract).
pub trait Storage: Send + Sync + 'static {
    /// Starts writing a new partial object at `key`, replacing a partial
    /// one left there (not one a live writer holds: that is `Busy`).
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;
    /// Opens a committed object.
    fn open(&self, key: &str) -> Result<Box<dyn ObjectRead>, StorageError>;
    /// Opens what an uncommitted writer left at `key`; `Busy` while that
    /// writer is alive, `NotFound` if there is none.
    fn open_partial(&self, key: &str) -> Result<Box<dyn ObjectRead>, StorageError>;
    /// Removes the object at `key`, committed and partial; absent is fine.
    fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Objects whose key starts with `prefix` (a whole key segment path).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;
}

/// Keys are `/`-separated segments of `[A-Za-z0-9._-]`, never `.` or `..`,
/// so no key can leave the storage root whatever the backend.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && !key.ends_with(PARTIAL_SUFFIX)
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.chars().take(80).collect()))
    }
}

const PARTIAL_SUFFIX: &str = ".partial";

/// Bytes overwritten with zeros before a file is unlinked: they hold the
/// age header, i.e. the file key wrapped to the tenant key. Without it the
/// data blocks left on disk cannot be decrypted by anyone.
const SHRED_BYTES: u64 = 4096;

/// Objects as files under a root directory (mode 0700 dirs, 0600 files).
///
/// A partial object is `KEY.partial`, held under an exclusive `flock` by
/// its writer: the kernel drops the lock when the process dies, which is
/// how recovery tells a crashed writer from a live one (also across
/// processes on one host).
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage rooted at `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        create_dirs(&root)?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file a committed object lives in.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    pub(crate) fn partial_path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let mut p = self.path_of(key)?.into_os_string();
        p.push(PARTIAL_SUFFIX);
        Ok(PathBuf::from(p))
    }
}

fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn not_found(e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound
    } else {
        e.into()
    }
}

/// How long a lock held by someone else may take to go away before the
/// object counts as held by a live writer.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// `true` when the lock was taken; `false` when another holder keeps it.
///
/// A lock the writer has just released can still be held for a moment by
/// a child process that another thread forked and that has not reached
/// `exec` yet (the child shares the writer's file description until its
/// close-on-exec runs), so a refusal is retried for [`LOCK_GRACE`]: a live
/// writer holds its lock for the whole call, a fork for microseconds.
fn try_lock(file: &File) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        if fs4::fs_std::FileExt::try_lock_exclusive(file)? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

impl Storage for LocalStorage {
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let path = self.path_of(key)?;
        let partial = self.partial_path(key)?;
        if let Some(dir) = path.parent() {
            create_dirs(dir)?;
        }
        let mut options = OpenOptions::new();
        // Not truncating before the lock is ours: that would cut a live
        // writer's file.
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&partial)?;
        if !try_lock(&file)? {
            return Err(StorageError::Busy);
        }
        file.set_len(0)?;
        Ok(Box::new(LocalWriter {
            file,
            partial,
            path,
            written: 0,
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn ObjectRead>, StorageError> {
        let file = File::open(self.path_of(key)?).map_err(not_found)?;
        Ok(Box::new(file))
    }

    fn open_partial(&self, key: &str) -> Result<Box<dyn ObjectRead>, StorageError> {
        let file = File::open(self.partial_path(key)?).map_err(not_found)?;
        if !try_lock(&file)? {
            return Err(StorageError::Busy);
        }
        Ok(Box::new(file))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        for path in [self.partial_path(key)?, self.path_of(key)?] {
            match shred_and_remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path_of(prefix.trim_end_matches('/'))?
        };
        let mut out = Vec::new();
        let mut dirs = vec![start];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    dirs.push(entry.path());
                    continue;
                }
                let Ok(rel) = entry.path().strip_prefix(&self.root).map(|p| p.to_owned()) else {
                    continue;
                };
                let Some(rel) = rel
                    .to_str()
                    .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
                else {
                    continue;
                };
                let (key, partial) = match rel.strip_suffix(PARTIAL_SUFFIX) {
                    Some(k) => (k.to_string(), true),
                    None => (rel, false),
                };
                if validate_key(&key).is_ok() {
                    out.push(ObjectInfo {
                        key,
                        size: meta.len(),
                        partial,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key).then(a.partial.cmp(&b.partial)));
        Ok(out)
    }
}

fn shred_and_remove(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len().min(SHRED_BYTES);
    file.write_all(&vec![0u8; len as usize])?;
    file.sync_data()?;
    drop(file);
    std::fs::remove_file(path)
}

struct LocalWriter {
    file: File,
    partial: PathBuf,
    path: PathBuf,
    written: u64,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for LocalWriter {
    fn written(&self) -> u64 {
        self.written
    }

    fn commit(self: Box<Self>) -> Result<u64, StorageError> {
        self.file.sync_all()?;
        std::fs::rename(&self.partial, &self.path)?;
        // The rename is durable once the directory is.
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.written)
    }

    fn abort(self: Box<Self>) -> Result<(), StorageError> {
        let partial = self.partial.clone();
        drop(self);
        match std::fs::remove_file(&partial) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        for bad in [
            "",
            "/abs",
            "a//b",
            "../x",
            "a/../b",
            "a/./b",
            "sp ace",
            "x.partial",
            "a\\b",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        validate_key("t-1/2026/01/31/rec_1.wav.age").unwrap();
    }

    #[test]
    fn partial_then_commit_then_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().join("rec")).unwrap();
        let mut w = s.create("t/a.bin").unwrap();
        w.write_all(b"hello").unwrap();
        assert!(matches!(s.open("t/a.bin"), Err(StorageError::NotFound)));
        // A live writer holds its partial object.
        assert!(matches!(s.open_partial("t/a.bin"), Err(StorageError::Busy)));
        assert!(matches!(s.create("t/a.bin"), Err(StorageError::Busy)));
        assert_eq!(
            s.list("t").unwrap(),
            [ObjectInfo {
                key: "t/a.bin".into(),
                size: 5,
                partial: true
            }]
        );
        assert_eq!(w.commit().unwrap(), 5);
        let mut text = String::new();
        s.open("t/a.bin")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello");
        s.delete("t/a.bin").unwrap();
        s.delete("t/a.bin").unwrap();
        assert!(s.list("").unwrap().is_empty());
    }

    #[test]
    fn a_dead_writer_leaves_a_readable_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path()).unwrap();
        let mut w = s.create("t/b.bin").unwrap();
        w.write_all(b"abc").unwrap();
        drop(w); // what a crash does
        let mut got = Vec::new();
        s.open_partial("t/b.bin")
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, b"abc");
        // A new writer replaces the leftover.
        let mut w = s.create("t/b.bin").unwrap();
        w.write_all(b"z").unwrap();
        w.abort().unwrap();
        assert!(matches!(
            s.open_partial("t/b.bin"),
            Err(StorageError::NotFound)
        ));
    }

    #[test]
    fn unwritable_root_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        assert!(LocalStorage::new(file.join("rec")).is_err());
    }
}
