//! Publishing metadata atomically, and keeping two indexers of one repository apart.
//!
//! Clients must only ever see a complete, consistent set of metadata: the previous one or the new
//! one. New metadata is therefore written into a hidden staging directory beside its final place,
//! every file and the directory are synced, and the directory is swapped in with one
//! `renameat2(RENAME_EXCHANGE)`. A reader that opened the old files keeps reading them (they are
//! only unlinked), and an interrupted run leaves the old tree in place plus a stale staging
//! directory, which the next run removes while it holds the lock.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FlockOperation, RenameFlags};

/// Where vrepo keeps its lock and caches inside a repository directory.
pub const STATE_DIR: &str = ".vrepo";

/// Failure to lock or publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Another process holds the repository lock.
    #[error(
        "another vrepo process is working on `{dir}` (lock `{lock}` is held); retry when it is done"
    )]
    Locked {
        /// The repository directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A file-system operation failed.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PublishError {
    let path = path.to_owned();
    move |source| PublishError::Io {
        action,
        path,
        source,
    }
}

/// An exclusive lock on a repository directory, released when dropped.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

/// Takes the repository's lock; with `wait` it blocks until the other holder is done.
pub fn lock_repository(dir: &Path, wait: bool) -> Result<RepoLock, PublishError> {
    let state = dir.join(STATE_DIR);
    std::fs::create_dir_all(&state).map_err(io_err("create", &state))?;
    let lock = state.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock)
        .map_err(io_err("open", &lock))?;
    match try_flock(&file) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) if wait => {
            rustix::fs::flock(&file, FlockOperation::LockExclusive)
                .map_err(|e| io_err("lock", &lock)(e.into()))?;
        }
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(PublishError::Locked {
                dir: dir.to_owned(),
                lock,
            });
        }
        Err(e) => return Err(io_err("lock", &lock)(e.into())),
    }
    Ok(RepoLock { _file: file })
}

/// A non-blocking exclusive `flock`, retried for a moment: a lock is held by an open file
/// description, and a child that another thread of the previous holder is forking keeps a copy
/// of the descriptor until it execs (`O_CLOEXEC` closes it only then), so a lock that was just
/// released can look taken for a few milliseconds.
fn try_flock(file: &File) -> rustix::io::Result<()> {
    let mut attempts = 0;
    loop {
        match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
            Err(rustix::io::Errno::WOULDBLOCK) if attempts < 20 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// A hidden directory where a new metadata tree is assembled before it is swapped in.
#[derive(Debug)]
pub struct Staging {
    parent: PathBuf,
    final_name: String,
    path: PathBuf,
    committed: bool,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Staging {
    /// Creates `parent/.FINAL_NAME.tmp-…`, removing stale ones left by interrupted runs.
    ///
    /// Call this while holding the repository lock, so that no live staging directory of another
    /// process is mistaken for a stale one.
    pub fn new(parent: &Path, final_name: &str) -> Result<Self, PublishError> {
        let prefix = format!(".{final_name}.tmp-");
        if let Ok(entries) = std::fs::read_dir(parent) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let stale = entry.path();
                    remove_tree(&stale)?;
                }
            }
        }
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("{prefix}{}-{n}", std::process::id()));
        std::fs::create_dir(&path).map_err(io_err("create", &path))?;
        Ok(Staging {
            parent: parent.to_owned(),
            final_name: final_name.to_owned(),
            path,
            committed: false,
        })
    }

    /// The staging directory, to write the new files into.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the staged tree and swaps it into place in one step; the old tree is deleted.
    pub fn commit(mut self) -> Result<(), PublishError> {
        sync_tree(&self.path)?;
        let target = self.parent.join(&self.final_name);
        let exists = std::fs::symlink_metadata(&target).is_ok();
        let flags = if exists {
            RenameFlags::EXCHANGE
        } else {
            RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(rustix::fs::CWD, &self.path, rustix::fs::CWD, &target, flags)
            .map_err(|e| io_err("publish", &target)(e.into()))?;
        sync_dir(&self.parent)?;
        self.committed = true;
        if exists {
            // The staging name now holds the previous tree.
            remove_tree(&self.path)?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes `bytes` to `path` so that readers see either the old or the new content, durably.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    // A bare file name has the empty path as parent: that is the current directory.
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(bytes).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err("rename into", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory, so that renames into it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

fn sync_tree(dir: &Path) -> Result<(), PublishError> {
    let entries = std::fs::read_dir(dir).map_err(io_err("read", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read", dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err("stat", &path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("sync", &path))?;
        }
    }
    sync_dir(dir)
}

fn remove_tree(path: &Path) -> Result<(), PublishError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}
