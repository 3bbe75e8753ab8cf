//! The guest's external package state, `/vservers/.pkg/G/`, laid out as util-vserver did: one
//! directory per program (`rpm`, `yum`), then per purpose (`etc`, `state`, `cache`).
//!
//! ```text
//! .pkg/G/rpm/etc/macros          generated rpm macros (%_dbpath, %_netsharedpath, the distribution's)
//! .pkg/G/rpm/state/              the rpm database, bind-mounted at the guest's /.rpmdb per operation
//! .pkg/G/rpm/home/.rpmmacros     per-operation HOME for rpm and dnf: the macros plus the plugin lines
//! .pkg/G/rpm/plugins/vserver.so  a copy of the plugin, found by rpm's plugin discovery and loaded
//! .pkg/G/yum/etc/yum.repos.d/    a per-guest copy of the distribution's repository files
//! .pkg/G/yum/cache, yum/lib, yum/log   dnf's cachedir, persistdir (history) and logs
//! .pkg/G/lock                    held (flock) for the duration of every package operation
//! ```
//!
//! All of it is host state, trusted, outside the guest: plain host paths (the guest never sees
//! them).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Paths of one guest's external package state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkgLayout {
    guest: String,
    dir: PathBuf,
}

impl PkgLayout {
    /// The layout of `guest` under the package-state root `pkgdir` (`/vservers/.pkg`).
    pub fn new(pkgdir: &Path, guest: &str) -> Self {
        PkgLayout {
            guest: guest.to_owned(),
            dir: pkgdir.join(guest),
        }
    }

    /// The guest's name.
    pub fn guest(&self) -> &str {
        &self.guest
    }

    /// `.pkg/G`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `.pkg/G/rpm/etc/macros`.
    pub fn macros_file(&self) -> PathBuf {
        self.dir.join("rpm/etc/macros")
    }

    /// `.pkg/G/rpm/state`: the rpm database.
    pub fn rpm_state(&self) -> PathBuf {
        self.dir.join("rpm/state")
    }

    /// `.pkg/G/rpm/home`: `HOME` of rpm and dnf during an operation.
    pub fn rpm_home(&self) -> PathBuf {
        self.dir.join("rpm/home")
    }

    /// `.pkg/G/rpm/plugins`: the `%__plugindir` of an operation.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.join("rpm/plugins")
    }

    /// `.pkg/G/yum`: everything dnf writes.
    pub fn yum_dir(&self) -> PathBuf {
        self.dir.join("yum")
    }

    /// `.pkg/G/yum/etc/yum.repos.d`.
    pub fn repos_dir(&self) -> PathBuf {
        self.dir.join("yum/etc/yum.repos.d")
    }

    /// `.pkg/G/yum/cache`.
    pub fn yum_cache(&self) -> PathBuf {
        self.dir.join("yum/cache")
    }

    /// `.pkg/G/yum/lib` (dnf's persistdir: history database).
    pub fn yum_lib(&self) -> PathBuf {
        self.dir.join("yum/lib")
    }

    /// `.pkg/G/yum/log`.
    pub fn yum_log(&self) -> PathBuf {
        self.dir.join("yum/log")
    }

    /// `.pkg/G/lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Creates every directory of the layout (mode 0700 for the top: the guest's database is
    /// nobody's business but root's).
    pub fn create(&self) -> Result<()> {
        for dir in [
            self.dir.clone(),
            self.dir.join("rpm/etc"),
            self.rpm_state(),
            self.rpm_home(),
            self.plugin_dir(),
            self.repos_dir(),
            self.yum_cache(),
            self.yum_lib(),
            self.yum_log(),
        ] {
            fs_err::create_dir_all(&dir).map_err(|e| self.host_err("create", &dir, e))?;
        }
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| self.host_err("set permissions of", &self.dir, e))
    }

    /// Takes `.pkg/G/lock`, which serialises the package operations on one guest; a second
    /// operation fails at once with [`Error::Busy`].
    pub(crate) fn lock(&self) -> Result<PkgLock> {
        let path = self.lock_file();
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.host_err("open", &path, e))?
            .into_parts()
            .0;
        // Retried for a moment: a child that another thread of the previous holder is forking
        // keeps a copy of the descriptor (and so the lock) until it execs.
        let mut attempts = 0;
        while rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .is_err()
        {
            attempts += 1;
            if attempts > 20 {
                return Err(Error::Busy {
                    guest: self.guest.clone(),
                    path: path.clone(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(PkgLock(file))
    }

    /// `.pkg/G/internal`: present exactly while package management is internal.
    pub fn internal_record(&self) -> PathBuf {
        self.dir.join("internal")
    }

    /// Takes the lock for an operation on the external database: refused while package
    /// management is internal. Checked under the lock, so an operation that loaded the guest's
    /// configuration just before an internalize finished cannot act on the archived database.
    pub(crate) fn lock_external(&self) -> Result<PkgLock> {
        let lock = self.lock()?;
        let record = self.internal_record();
        if std::fs::symlink_metadata(&record).is_ok() {
            return Err(Error::Internal {
                guest: self.guest.clone(),
                record,
            });
        }
        Ok(lock)
    }

    /// Flushes the file system that holds `.pkg/G` (one `syncfs`): after work that ran with
    /// fsync turned off, this and the guest root's file system are what must reach the disk.
    pub(crate) fn sync_state(&self) -> Result<()> {
        let dir =
            std::fs::File::open(&self.dir).map_err(|e| self.host_err("open", &self.dir, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| self.host_err("sync", &self.dir, e.into()))
    }

    pub(crate) fn host_err(&self, op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Host {
            guest: self.guest.clone(),
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// A held `.pkg/G/lock`, released when dropped.
pub(crate) struct PkgLock(#[allow(dead_code)] std::fs::File);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_on_the_external_database_are_refused_while_internal() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PkgLayout::new(tmp.path(), "g");
        std::fs::create_dir_all(layout.dir()).unwrap();
        drop(layout.lock_external().unwrap());
        std::fs::write(layout.internal_record(), "").unwrap();
        assert!(matches!(
            layout.lock_external(),
            Err(Error::Internal { .. })
        ));
        // Internalize and externalize themselves still take the plain lock.
        assert!(layout.lock().is_ok());
    }

    #[test]
    fn a_second_operation_on_one_guest_is_refused_until_the_first_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PkgLayout::new(tmp.path(), "g");
        layout.create().unwrap();
        let held = layout.lock().unwrap();
        assert!(matches!(layout.lock(), Err(Error::Busy { .. })));
        drop(held);
        assert!(layout.lock().is_ok());
    }
}
